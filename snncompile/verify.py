"""The IR verifier: SSA order, unique ids, one output, op schemas and shapes."""
from __future__ import annotations

from .errors import VerifyError
from .ops import OPS, has_trait, infer_shape

__all__ = ["verify_graph"]


def verify_graph(graph) -> None:
    """Raise VerifyError naming the first node that breaks an invariant; return None if sound.

    Checks: ids unique; every input defined earlier in the graph; exactly one ``output``, last;
    op known; arity; required attrs and params present and no unknown ones; every attribute's
    value allowed by its schema (type, range, choices: ``ops.Attr``); a neuron's threshold scalar
    or one value per channel; the recorded shape equals the shape the op computes.
    """
    seen: dict[int, object] = {}
    members = {id(n) for n in graph.nodes}
    outputs = [n for n in graph.nodes if n.op == "output"]
    if len(outputs) != 1:
        raise VerifyError(f"graph has {len(outputs)} output nodes; it needs exactly one")
    if graph.nodes[-1] is not outputs[0]:
        raise VerifyError("the output node must be the last node")
    for node in graph.nodes:
        where = node.describe()
        if node.id in seen:
            raise VerifyError(f"{where}: id %{node.id} is used twice")
        for i in node.inputs:
            if id(i) not in members:
                raise VerifyError(f"{where}: reads %{i.id}, which is not in the graph")
            if i.id not in seen or seen[i.id] is not i:
                raise VerifyError(f"{where}: reads %{i.id} before it is defined (SSA order broken)")
        seen[node.id] = node
        opdef = OPS.get(node.op)
        if opdef is None:
            raise VerifyError(f"{where}: op {node.op!r} is not in the op table")
        n_in = len(node.inputs)
        if opdef.arity is None and n_in < 1 or opdef.arity is not None and n_in != opdef.arity:
            want = "at least 1" if opdef.arity is None else str(opdef.arity)
            raise VerifyError(f"{where}: takes {want} input(s), has {n_in}")
        specs = opdef.specs_for(node)
        for k, spec in specs.items():
            if spec.required and k not in node.attrs:
                raise VerifyError(f"{where}: missing required attribute {k!r}")
        unknown = set(node.attrs) - set(specs)
        if unknown:
            raise VerifyError(f"{where}: unknown attribute(s) {sorted(unknown)}; {node.op} takes {sorted(specs)}")
        _check_attr_values(node, specs, where)
        for k in opdef.params:
            if k not in node.params:
                raise VerifyError(f"{where}: missing parameter {k!r}")
        unknown = set(node.params) - set(opdef.params) - set(opdef.optional_params)
        if unknown:
            raise VerifyError(f"{where}: unknown parameter(s) {sorted(unknown)}")
        _check_shape(node, where)


def _show_value(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_attr_values(node, specs, where: str) -> None:
    for k, v in node.attrs.items():
        wrong = specs[k].problem(v)
        if wrong is not None:
            raise VerifyError(f"{where}: attribute {k}={_show_value(v)} is not allowed — {k} must be {wrong}")


def _check_shape(node, where: str) -> None:
    if node.op == "recurrent":
        try:
            node.attrs["body"].verify()
        except VerifyError as e:
            raise VerifyError(f"{where}: its body graph is broken: {e}") from None
    th = node.params.get("threshold")
    if has_trait(node, "neuron") and th is not None:
        shape = node.inputs[0].shape
        if th.numel() != 1 and (shape is None or len(shape) < 2 or shape[1] != th.numel()):
            raise VerifyError(f"{where}: threshold has {th.numel()} values but the input is "
                              f"{shape}; use a scalar or one value per channel")
    try:
        got = infer_shape(node, [i.shape for i in node.inputs])
    except VerifyError:
        raise
    except Exception as e:  # the op itself refused these shapes/params
        raise VerifyError(f"{where}: does not run on its inputs' shapes "
                          f"{[i.shape for i in node.inputs]}: {e}") from None
    want = node.meta.get("shape")
    if got is not None and want is not None and tuple(got) != tuple(want):
        raise VerifyError(f"{where}: recorded shape {list(want)} but the op computes {list(got)}")
