import jaxvars as jv

PUBLIC = {
    "AUTO_REUSE",
    "JaxvarsError",
    "Module",
    "Optimizer",
    "Store",
    "Variable",
    "VariableScope",
    "config",
    "default_store",
    "device",
    "fori_loop",
    "get_variable",
    "grad",
    "jit",
    "make_template",
    "name_scope",
    "random",
    "reset_default_store",
    "restore",
    "save",
    "set_log_device_placement",
    "sharding_rules",
    "value_and_grad",
    "variable_scope",
}
NOT_OWN_OBJECTS = {"config", "AUTO_REUSE", "random"}


def test_public_names_are_exactly_the_documented_ones():
    assert set(jv.__all__) == PUBLIC
    assert {n for n in dir(jv) if not n.startswith("_")} == PUBLIC


def test_public_names_report_the_package_as_their_module():
    for name in PUBLIC - NOT_OWN_OBJECTS:
        assert getattr(jv, name).__module__ == "jaxvars", name


def test_every_public_name_has_a_docstring():
    for name in PUBLIC:
        assert (getattr(jv, name).__doc__ or "").strip(), name


def test_random_module_surface():
    assert set(jv.random.__all__) == {"set_seed", "next_key", "normal", "uniform"}
