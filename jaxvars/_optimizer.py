"""Optimizer: an optax transformation whose state lives in variables."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import optax
from jax.core import Tracer

from . import _display, _naming, _trace
from ._errors import JaxvarsTypeError, JaxvarsValueError, boundary
from ._module import Module
from ._named import adopt
from ._scope import get_variable_scope
from ._selection import check_selects, selector
from ._store import active_store
from ._transforms import masked_gradient, value_and_grad
from ._variable import Variable


class Optimizer:
    """Apply an optax transformation to variables, TensorFlow style.

    The optimiser state lives in non-trainable variables (in the active store,
    under the optimiser's scope), so ``jv.jit`` carries it and checkpoints
    include it. Their names derive only from the target's structure (and
    which of its variables train), so a fresh optimiser over a fresh model
    matches a saved one. Variables with ``trainable=False`` and masked-out
    elements are never changed, whatever the transformation (weight decay
    included): they stay bit-identical.

    Only the variables that train get state: those whose ``trainable`` is
    True or a mask, with a floating-point (or complex) dtype. Frozen ones and
    integer or bool ones (step counters, BatchNorm counts) get none, are never
    assigned, and a gradient given for one is ignored. Setting ``trainable``
    after the optimiser is made takes effect at the next update (or
    ``checkpoint_variables``): a variable that starts training gets fresh
    state, as ``tx.init`` makes it, never state left from an earlier time it
    trained; one that stops loses its state; the others keep theirs, as do
    state entries shared by all variables (Adam's step count). Changing a
    mask keeps the state.

    Args:
        tx: An ``optax.GradientTransformation``, e.g. ``optax.adam(1e-3)``.
        target: A Module (all its variables; gradients come for its
            ``trainable_variables``), a Variable, or a list/tuple/dict of them.
        name: The scope name of the state variables (made unique in the store).
        wrt: Which of the target's variables to update (``nnx.Optimizer``'s
            ``wrt``): ``"trainable"`` (the default: all that train), a regular
            expression matched from the start (``re.match``, as TF's
            collections) against each variable's key in the target or its
            full name (``"encoder/"``), a predicate taking a Variable and
            returning True or False, or a list of Modules and Variables of
            the target. Of what it selects, only variables that train (see
            above) get state and updates; it is asked again at each update,
            so layers built later and ``trainable`` set since are followed. It
            is fixed when the optimiser is made.

    Attributes:
        iterations: A non-trainable int32 variable counting applied steps.
        variables: The target's variables, ``{key: Variable}`` (those that
            train are updated).

    Example:
        >>> import optax
        >>> import jaxvars as jv
        >>> w = jv.Variable([1.0, 2.0], name="w")
        >>> with jv.Store():
        ...     opt = jv.Optimizer(optax.sgd(0.5), [w])
        ...     opt.apply_gradients([jv.grad(lambda: (w * w).sum(), w)()])
        >>> w.numpy(), int(opt.iterations)
        (array([0., 0.], dtype=float32), 1)
        >>> steps = jv.Variable(0, name="steps")  # an int: no state, never touched
        >>> with jv.Store():
        ...     adam = jv.Optimizer(optax.adam(0.1), {"w": w, "steps": steps})
        >>> sorted(adam.checkpoint_variables())
        ['0/count', '0/mu/w', '0/nu/w', 'iterations']
        >>> b = jv.Variable([0.0], name="b")
        >>> with jv.Store():
        ...     head = jv.Optimizer(optax.adam(0.1), {"w": w, "b": b}, wrt=[b])
        >>> list(head.trainable_variables)
        ['b']
    """

    def __init__(
        self,
        tx: optax.GradientTransformation,
        target: Any,
        *,
        name: str = "optimizer",
        wrt: Any = "trainable",
    ):
        if not isinstance(tx, optax.GradientTransformation):
            raise JaxvarsTypeError(
                f"Optimizer needs an optax.GradientTransformation (e.g. optax.adam(1e-3)), "
                f"got {type(tx).__name__}."
            )
        self._tx = tx
        self._target = target
        self.variables: dict[str, Variable] = _keyed_variables(target)
        self._select = selector(wrt)
        check_selects(wrt, self.variables)
        self._wrt = wrt
        _naming.check_name(name, "optimizer")
        parent = get_variable_scope().name
        self._scope = active_store()._unique_name(f"{parent}/{name}" if parent else name)
        self._state: list[Variable] = []
        # Every state variable made, by full name: one that goes out of use
        # when its variable stops training comes back if it trains again.
        self._made: dict[str, Variable] = {}
        self._build_state()
        with _trace.outside():
            self.iterations = self._state_variable("iterations", jnp.zeros((), jnp.int32))

    def _build_state(self) -> None:
        """Make the state for the variables that train, keeping the state in use."""
        self._trained = trained = self._select(self.variables)
        abstract = any(v.is_abstract for v in trained.values())
        # Parameters a jv.jit trace is creating (a model built in its first step):
        # their state is computed in that trace too, from their traced values.
        creating = abstract and not _trace.abstract.get() and _trace.current.get() is not None
        with contextlib.nullcontext() if creating else _trace.outside():
            if abstract and not creating:
                # Abstract parameters (jv.eval_shape): abstract state, nothing computed.
                shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in trained.items()}
                state = jax.eval_shape(self._tx.init, shapes)
            else:
                state = self._tx.init({key: v.value for key, v in trained.items()})
            paths_and_leaves, self._treedef = jax.tree_util.tree_flatten_with_path(state)
            in_use = {v.name: v for v in self._state}
            self._state = []
            for path, leaf in paths_and_leaves:
                key = _path_name(path)
                full = f"{self._scope}/{key}"
                variable = in_use.get(full)
                if variable is None and full in self._made:
                    variable = self._made[full]
                    if isinstance(leaf, jax.Array):
                        variable.assign(leaf)  # training again: fresh state, not stale
                elif variable is None:
                    variable = self._made[full] = self._state_variable(key, leaf)
                self._state.append(variable)

    def _sync(self) -> None:
        """Bring the state up to date: layers built lazily, ``trainable`` set since."""
        self._follow()
        for variable in self.variables.values():
            # Compiled steps read the settings here: changing one must retrace them.
            _trace.note_used(variable)
        if self._select(self.variables).keys() != self._trained.keys():
            self._build_state()

    def _follow(self) -> None:
        """Over a Module: take in the variables it gained (layers built lazily)."""
        if not isinstance(self._target, Module):
            return
        current = self._target.named_variables()
        if current.keys() == self.variables.keys() and all(
            current[k] is v for k, v in self.variables.items()
        ):
            return
        for key, variable in current.items():
            old = self.variables.get(key)
            if old is not None and old is not variable:
                raise JaxvarsValueError(
                    f"Module '{self._target.name}' replaced its variable {key!r} after the "
                    "optimiser was made; its optimiser state would no longer fit. Create a "
                    "new Optimizer, or assign the new value to the old variable."
                )
        if not self.variables:  # built since: wrt is checked against what it built
            check_selects(self._wrt, current)
        self.variables = current

    def _state_variable(self, key: str, leaf: Any) -> Variable:
        full = f"{self._scope}/{key}"
        committed = isinstance(leaf, jax.Array) and not isinstance(leaf, Tracer) and leaf.committed
        with _naming.prefix(""):
            variable = Variable(
                leaf, name=full, trainable=False, sharding=leaf.sharding if committed else None
            )
        return adopt(full, variable)

    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        """For treescope (``pip install jaxvars[treescope]``): see ``_treescope``."""
        from . import _treescope

        return _treescope.optimizer(self, path, subtree_renderer)

    def __repr__(self) -> str:
        return (
            f"<jaxvars.Optimizer '{self._scope}' ({_transformation_name(self._tx)}): "
            f"{_display.plural(len(self.variables), 'variable')} "
            f"({_display.plural(_count(self.variables.values()), 'value')}), "
            f"{_display.plural(len(self._state), 'state variable')} "
            f"({_display.plural(_count(self._state), 'value')}), "
            f"iterations={_steps(self.iterations)}>"
        )

    def _repr_html_(self) -> str:
        rows = _display.named_rows(self.state_variables)
        title = (
            f"Optimizer '{self._scope}' ({_transformation_name(self._tx)}) over "
            f"{_display.plural(len(self.variables), 'variable')} "
            f"({_display.plural(_count(self.variables.values()), 'value')}), "
            f"iterations={_steps(self.iterations)}"
        )
        return _display.html_table(title, rows, _display.state_totals(self._state))

    @property
    def scope_name(self) -> str:
        """The full name of the scope holding the state (``"optimizer"``, ``"optimizer_1"``)."""
        return self._scope

    @property
    def wrt(self) -> Any:
        """What the optimiser was asked to update (``"trainable"`` unless given)."""
        return self._wrt

    @wrt.setter
    def wrt(self, value: Any) -> None:
        raise JaxvarsValueError(
            "Optimizer.wrt is fixed when the optimiser is made: its state was built for what "
            "wrt selects. Make a new jv.Optimizer(tx, target, wrt=...) (its state starts anew)."
        )

    @property
    def trainable_variables(self) -> dict[str, Variable]:
        """The variables updated here, ``{key: Variable}``: those ``wrt`` selects that
        train, as of now (layers built and ``trainable`` set since are counted)."""
        self._follow()
        return self._select(self.variables)

    @property
    def state_variables(self) -> dict[str, Variable]:
        """The optimiser's own variables, ``{full name: Variable}``."""
        return {v.name: v for v in (*self._state, self.iterations)}

    def checkpoint_variables(self) -> dict[str, Variable]:
        """The state keyed relative to the scope (``"0/mu/layers/0/w"``, ``"iterations"``).

        These are the optimiser's checkpoint keys: they do not depend on the
        scope's number, so a fresh optimiser restores a saved one. The state
        is brought up to date first (layers built and ``trainable`` set since
        the last update), so the keys are those a fresh optimiser would have.
        """
        self._sync()
        start = len(self._scope) + 1
        return {name[start:]: v for name, v in self.state_variables.items()}

    @boundary
    def apply_gradients(self, grads: Any, global_step: Variable | None = None) -> None:
        """Update the variables from ``grads``, eagerly or inside ``jv.jit``.

        Over a Module, variables the module gained since the last call (layers
        built lazily) get optimiser state first, as do variables that started
        training (see the class doc). A variable's ``constraint`` is applied
        to its updated value (frozen and masked-out elements stay untouched).

        Args:
            grads: Shaped like what ``jv.grad`` returns for the target (a tuple
                for a Module's ``trainable_variables`` or for the optimiser's own
                ``trainable_variables``, a list for a list, a dict for a dict, an
                array for a Variable), or a list, tuple or
                iterator of ``(gradient, variable)`` pairs, as in TensorFlow.
                Gradients for variables that do not train are ignored.
            global_step: A variable to increment by one, as in TF1.

        Raises:
            ValueError: a gradient for an unknown variable, a wrong count, or a
                gradient of another shape than its variable.
            TypeError: a ``global_step`` that is not a Variable.
        """
        if global_step is not None and not isinstance(global_step, Variable):
            raise JaxvarsTypeError(
                f"apply_gradients: global_step must be a jv.Variable (e.g. "
                f"jv.Variable(0, name='global_step', trainable=False)), got "
                f"{type(global_step).__name__}."
            )
        self._sync()
        # A None gradient (TF's for a variable the loss does not use) counts as none.
        by_key = {k: g for k, g in self._gradients_by_key(grads).items() if g is not None}
        for key, grad in by_key.items():
            variable = self.variables[key]
            if jnp.shape(grad) != variable.shape:
                raise JaxvarsValueError(
                    f"The gradient for variable '{variable.name}' has shape {jnp.shape(grad)}, "
                    f"the variable {variable.shape}."
                )
        # Only the variables that train: the others are never read nor assigned here.
        trained = self._trained
        params = {key: v.value for key, v in trained.items()}
        full = {
            key: masked_gradient(v, by_key[key]) if key in by_key else jnp.zeros_like(params[key])
            for key, v in trained.items()
        }
        state = jax.tree_util.tree_unflatten(self._treedef, [s.value for s in self._state])
        updates, new_state = self._tx.update(full, state, params)
        updates = cast(dict[str, Any], updates)  # optax keeps the structure of the gradients
        for key, variable in trained.items():
            new = _constrained(variable, optax.apply_updates(params[key], updates[key]))
            variable.assign(_mask(variable, new, params[key]))
        for variable, leaf in zip(self._state, jax.tree.leaves(new_state), strict=True):
            variable.assign(leaf)
        self.iterations.assign_add(1)
        if global_step is not None:
            global_step.assign_add(1)

    @boundary
    def apply(self, grads: Any, variables: Any = None) -> None:
        """Keras 3's ``optimizer.apply(grads, trainable_variables)``.

        Args:
            grads: Gradients, one per variable of ``variables``; or, with
                ``variables`` None, shaped like the target (see ``apply_gradients``).
            variables: The variables the gradients are for (each optimised here).

        Example:
            >>> import optax
            >>> import jaxvars as jv
            >>> w = jv.Variable([1.0, 2.0], name="w")
            >>> with jv.Store():
            ...     opt = jv.Optimizer(optax.sgd(0.5), [w])
            ...     opt.apply([w.value], [w])
            >>> w.numpy()
            array([0.5, 1. ], dtype=float32)
        """
        if variables is None:
            return self.apply_gradients(grads)
        grads, variables = list(grads), list(variables)
        if len(grads) != len(variables):
            raise JaxvarsValueError(
                f"apply: got {len(grads)} gradients for {len(variables)} variables."
            )
        return self.apply_gradients(list(zip(grads, variables, strict=True)))

    @boundary
    def minimize(self, loss_fn: Callable[[], Any], global_step: Variable | None = None) -> Any:
        """Compute the gradients of ``loss_fn()`` for the target's trainable variables
        and apply them; returns the loss. Eagerly or inside ``jv.jit``.

        Args:
            loss_fn: A function of no arguments returning the scalar loss (it
                reads the variables; TF1's loss tensor is such a function here).
            global_step: A variable to increment by one, as in TF1.

        Example:
            >>> import optax
            >>> import jaxvars as jv
            >>> w = jv.Variable(3.0, name="w")
            >>> with jv.Store():
            ...     opt = jv.Optimizer(optax.sgd(0.25), [w])
            ...     float(opt.minimize(lambda: w * w)), float(w)
            (9.0, 1.5)
        """
        if not callable(loss_fn):
            raise JaxvarsTypeError(
                "minimize takes a function of no arguments computing the loss (e.g. "
                f"lambda: loss(model(x), y)), got {type(loss_fn).__name__}: a value "
                "computed beforehand has no gradient to follow."
            )
        if isinstance(self._target, Module) and not self._target.variables:
            # Nothing built yet: jv.grad over the module builds it by a first call.
            loss, grads = value_and_grad(loss_fn, self._target)()
            self.apply_gradients(grads, global_step)
            return loss
        self._sync()
        wrt = list(self._trained.values())
        loss, grads = value_and_grad(loss_fn, wrt)()
        self.apply_gradients(list(zip(grads, wrt, strict=True)), global_step)
        return loss

    def _gradients_by_key(self, grads: Any) -> dict[str, Any]:
        keys = {id(v): key for key, v in self.variables.items()}
        if isinstance(grads, Iterator) or _is_pairs(grads):
            return {self._key_of(v, keys): g for g, v in grads}
        target = self._target
        if isinstance(target, Variable):
            return {next(iter(self.variables)): grads}
        if isinstance(target, Mapping) or isinstance(grads, Mapping):
            # A dict target's, or opt.trainable_variables' (its keys are the target's).
            if not isinstance(grads, Mapping) or set(grads) - set(self.variables):
                raise JaxvarsValueError(
                    f"Gradients for a dict of variables must be a dict with its keys "
                    f"{sorted(self.variables)}; got {_describe(grads)}."
                )
            return dict(grads)
        order = target.trainable_variables if isinstance(target, Module) else target
        if isinstance(grads, Sequence) and len(grads) != len(order):
            order = tuple(self._trained.values())  # one per variable updated here
        if not isinstance(grads, Sequence) or len(grads) != len(order):
            raise JaxvarsValueError(
                f"Expected {len(order)} gradients (one per "
                f"{'trainable variable' if isinstance(target, Module) else 'variable'}), "
                f"got {_describe(grads)}."
            )
        return {self._key_of(v, keys): g for g, v in zip(grads, order, strict=True)}

    def _key_of(self, variable: Any, keys: dict[int, str]) -> str:
        if not isinstance(variable, Variable) or id(variable) not in keys:
            name = getattr(variable, "name", type(variable).__name__)
            raise JaxvarsValueError(
                f"Got a gradient for '{name}', which this optimiser does not update."
            )
        return keys[id(variable)]


def _transformation_name(tx: Any) -> str:
    """The optax function that made ``tx`` (``chain``, ``scale_by_adam``), from its init."""
    qualname = getattr(tx.init, "__qualname__", "")
    return f"optax.{qualname.split('.')[0]}" if qualname else type(tx).__name__


def _count(variables: Any) -> int:
    return sum(v.size for v in variables)


def _steps(iterations: Variable) -> str:
    try:
        return str(int(iterations))
    except Exception:  # inside a trace, or abstract: no number to show
        return "?"


def _is_pairs(grads: Any) -> bool:
    """Whether ``grads`` is a list or tuple of ``(gradient, variable)`` pairs."""
    return (
        isinstance(grads, (list, tuple))
        and len(grads) > 0
        and all(
            isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[1], Variable)
            for pair in grads
        )
    )


def _keyed_variables(target: Any) -> dict[str, Variable]:
    """The target's variables keyed by structure: module paths, dict keys or indexes."""
    if isinstance(target, Module):
        return target.named_variables()  # may be empty: a module that builds lazily
    if isinstance(target, Variable):
        return {"0": target}
    items = target.items() if isinstance(target, Mapping) else enumerate(target)
    keyed = {str(k): v for k, v in items}
    bad = [type(v).__name__ for v in keyed.values() if not isinstance(v, Variable)]
    if bad or not keyed:
        raise JaxvarsTypeError(
            "Optimizer target must be a Module, a Variable, or a non-empty list/tuple/dict "
            f"of Variables; got {type(target).__name__}"
            + (f" holding {', '.join(sorted(set(bad)))}." if bad else " with no variables.")
        )
    return keyed


def _constrained(variable: Variable, new: Any) -> Any:
    constraint = variable.constraint
    if constraint is None:
        return new
    projected = constraint(new)
    if jnp.shape(projected) != variable.shape:
        raise JaxvarsValueError(
            f"The constraint of variable '{variable.name}' returned shape "
            f"{jnp.shape(projected)}; it must keep the variable's shape {variable.shape}."
        )
    return projected


def _mask(variable: Variable, new: Any, old: Any) -> Any:
    trainable = variable.trainable
    return new if trainable is True else jnp.where(trainable, new, old)


def _path_name(path: tuple[Any, ...]) -> str:
    """``"0/mu/layers/0/w"``: the keys, indexes and field names of a state leaf."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def _describe(grads: Any) -> str:
    if isinstance(grads, Sequence):
        return f"a {type(grads).__name__} of {len(grads)}"
    return type(grads).__name__
