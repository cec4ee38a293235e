import jaxvars as jv

PUBLIC = {
    "JaxvarsError",
    "Variable",
    "config",
}


def test_public_names_are_exactly_the_documented_ones():
    assert set(jv.__all__) == PUBLIC
    assert {n for n in dir(jv) if not n.startswith("_")} == PUBLIC


def test_public_names_report_the_package_as_their_module():
    for name in PUBLIC - {"config"}:
        assert getattr(jv, name).__module__ == "jaxvars", name


def test_every_public_name_has_a_docstring():
    for name in PUBLIC:
        assert (getattr(jv, name).__doc__ or "").strip(), name
