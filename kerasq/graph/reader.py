"""Read a Keras 3 Functional or Sequential model into a flat ``Graph`` using public APIs only.

``keras.models.clone_model`` replays the model's graph, calling ``clone_function`` once per operation in
topological order (layers and ``keras.ops`` calls alike). We hand it a recording proxy per operation: the
proxy computes output specs with the original operation and logs every call. The user's model gains no new
nodes and its layers are never called on data. Nested sub-models are read the same way and spliced in.
"""

from __future__ import annotations

import itertools
from typing import Any

import keras

from kerasq.errors import UnsupportedModelError
from kerasq.graph.model_graph import Graph, Node, TensorInfo, TensorRef
from kerasq.graph.op_kinds import op_kind

_trace_ids = itertools.count()


class _CallRecorder(keras.Operation):
    """Stands in for one operation during cloning and records how it is called."""

    def __init__(self, op: keras.Operation, log: list) -> None:
        super().__init__(name=f"kerasq_trace_{next(_trace_ids)}")
        self._op = op
        self._log = log

    def compute_output_spec(self, *args: Any, **kwargs: Any) -> Any:
        return self._op.compute_output_spec(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        outputs = super().__call__(*args, **kwargs)
        self._log.append((self._op, args, kwargs, outputs))
        return outputs


def _call_defined_by(model: keras.Model) -> type:
    for cls in type(model).__mro__:
        if "call" in cls.__dict__:
            return cls
    return object


def check_graph_model(model: object) -> keras.Model:
    """Return a Functional view of ``model`` or raise a clear error explaining what to do."""
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(
            f"kerasq quantizes keras.Model objects (Keras 3); got {type(model).__name__}. "
            "Load your model with keras.models.load_model or build it with the Functional/Sequential API."
        )
    definer = _call_defined_by(model)
    if definer.__name__ not in ("Functional", "Sequential") or not definer.__module__.startswith("keras"):
        raise UnsupportedModelError(
            f"Model {model.name!r} ({type(model).__name__}) is a subclassed model: its graph lives in Python "
            "code in `call`, which kerasq cannot read or rewrite. Rebuild it with the Functional API "
            "(keras.Input -> layers -> keras.Model(inputs, outputs)) or as a keras.Sequential, reusing the "
            "same layers and weights, then quantize that model."
        )
    if isinstance(model, keras.Sequential):
        try:
            inputs, outputs = model.inputs, model.outputs
        except (AttributeError, ValueError) as err:
            raise UnsupportedModelError(
                f"Sequential model {model.name!r} is not built, so its input shape is unknown. Start it with "
                "keras.Input(shape=...) or call model.build(input_shape) before quantizing."
            ) from err
        return keras.Model(inputs, outputs, name=model.name)
    return model


def _record_calls(model: keras.Model, input_tensors: list) -> tuple[list, Any]:
    log: list = []
    clone = keras.models.clone_model(
        model,
        input_tensors=keras.tree.pack_sequence_as(model.input, list(input_tensors)),
        clone_function=lambda op: _CallRecorder(op, log),
    )
    return log, clone.output


class _GraphWriter:
    """Accumulates nodes while walking (possibly nested) recorded calls."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.tensors: dict[int, TensorInfo] = {}
        self._ids: dict[int, int] = {}  # id(KerasTensor) -> tensor id
        self._keep: list = []  # keep KerasTensors alive so id() stays unique
        self._names: set[str] = set()

    def tensor_id(self, kt: Any) -> int:
        key = id(kt)
        if key not in self._ids:
            self._ids[key] = len(self.tensors)  # aliases add keys to _ids, not new tensors
            self._keep.append(kt)
            self.tensors[self._ids[key]] = TensorInfo(shape=tuple(kt.shape), dtype=str(kt.dtype))
        return self._ids[key]

    def alias(self, kt: Any, tensor_id: int) -> None:
        self._ids[id(kt)] = tensor_id
        self._keep.append(kt)

    def to_refs(self, structure: Any) -> Any:
        return keras.tree.map_structure(
            lambda t: TensorRef(self.tensor_id(t)) if isinstance(t, keras.KerasTensor) else t, structure
        )

    def unique_name(self, name: str, prefix: str) -> str:
        """Layer name; prefixed by the sub-model on clashes; ``_call{i}`` for repeated calls."""
        candidate = name if name not in self._names else f"{prefix}{name}"
        base, i = candidate, 1
        while candidate in self._names:
            candidate = f"{base}_call{i}"
            i += 1
        self._names.add(candidate)
        return candidate

    def add_model(self, model: keras.Model, input_tensors: list, prefix: str = "") -> Any:
        log, outputs = _record_calls(model, input_tensors)
        for op, args, kwargs, op_outputs in log:
            if isinstance(op, keras.Model):
                self._splice_submodel(op, _submodel_inputs(op, args, kwargs), op_outputs, prefix)
                continue
            ins = [
                self.tensor_id(t)
                for t in keras.tree.flatten((args, kwargs))
                if isinstance(t, keras.KerasTensor)
            ]
            node = Node(
                name=self.unique_name(op.name, prefix),
                op=op,
                kind=op_kind(op),
                args=self.to_refs(args),
                kwargs=self.to_refs(kwargs),
                inputs=ins,
                outputs=[self.tensor_id(t) for t in keras.tree.flatten(op_outputs)],
                float_reason=_float_reason(op),
            )
            self.nodes.append(node)
        return outputs

    def _splice_submodel(self, sub: keras.Model, flat_args: list, sub_outputs: Any, prefix: str) -> None:
        inner = check_graph_model(sub)
        if len(flat_args) != len(inner.inputs):
            raise UnsupportedModelError(
                f"Nested model {sub.name!r} is called with {len(flat_args)} tensors but has "
                f"{len(inner.inputs)} inputs; kerasq cannot flatten it. Call it with one tensor per input "
                "(a list or dict in the order of its inputs)."
            )
        # Fresh Inputs stand in for the outer tensors: a Functional built on tensors that are not Inputs
        # copies its graph, so its outputs would not be the tensors the recorded calls produced.
        stand_ins = [keras.Input(batch_shape=t.shape, dtype=t.dtype) for t in flat_args]
        for stand_in, outer in zip(stand_ins, flat_args, strict=True):
            self.alias(stand_in, self.tensor_id(outer))
        inner_outputs = self.add_model(inner, stand_ins, prefix=f"{prefix}{sub.name}_")
        for outer, produced in zip(
            keras.tree.flatten(sub_outputs), keras.tree.flatten(inner_outputs), strict=True
        ):
            self.alias(outer, self.tensor_id(produced))


def _float_reason(op: keras.Operation) -> str | None:
    """Why a node is kept in float whatever the platform says (None: the platform decides)."""
    if isinstance(op, keras.layers.Lambda):
        return (
            f"Lambda {op.name!r} runs Python code kerasq cannot read, so it stays float. To quantize what it "
            "computes, write it with keras.ops calls or Keras layers instead."
        )
    return None


def _submodel_inputs(sub: keras.Model, args: tuple, kwargs: dict) -> list:
    """The tensors a nested model is called on: its ``inputs`` argument, given by position or by name."""
    inputs = args[0] if args else kwargs.get("inputs")
    rest = (args[1:], {key: value for key, value in kwargs.items() if key != "inputs"})
    if any(isinstance(t, keras.KerasTensor) for t in keras.tree.flatten(rest)):
        raise UnsupportedModelError(
            f"Nested model {sub.name!r} is called with a tensor outside its `inputs` argument (such as "
            "`mask=`); kerasq cannot flatten it. Pass every tensor through `inputs` (give the nested model an "
            "input for it) or compute the mask inside the nested model."
        )
    return [t for t in keras.tree.flatten(inputs) if isinstance(t, keras.KerasTensor)]


def read_model(model: keras.Model) -> Graph:
    """Read ``model`` (Functional or Sequential, possibly nested) into a flat ``Graph``."""
    functional = check_graph_model(model)
    writer = _GraphWriter()
    inputs = [
        keras.Input(batch_shape=t.shape, dtype=t.dtype, name=_input_name(t, i))
        for i, t in enumerate(functional.inputs)
    ]
    input_ids = [writer.tensor_id(t) for t in inputs]
    output_refs = writer.to_refs(writer.add_model(functional, inputs))
    return Graph(
        name=model.name,
        inputs=input_ids,
        input_names=[_input_name(t, i) for i, t in enumerate(functional.inputs)],
        outputs=output_refs,
        nodes=writer.nodes,
        tensors=writer.tensors,
    )


def _input_name(tensor: Any, index: int) -> str:
    name = getattr(tensor, "name", None) or f"input_{index}"
    return name.split(":")[0]
