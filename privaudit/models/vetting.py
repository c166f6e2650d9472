"""Vetting a stranger's model archive before torch reads it: loading a model must never run code.

Both foreign formats are zip archives that torch reads member by member, and several members can
run code when a stranger writes them:

* ``.pt2`` (``torch.export.load``): legacy weights, payloads marked ``use_pickle`` and sample inputs
  whose safe load fails are unpickled with ``weights_only=False``; opaque constants with
  ``pickle.loads``; AOTInductor members are shared libraries torch loads; the program's JSON holds
  symbolic expressions that ``sympy.sympify`` evaluates (``eval``), ``guards_code`` that is ``exec``-ed,
  and names and operator targets that become generated Python code.
* TorchScript (``torch.jit.load``): its pickles are read by torch's C++ unpickler, which cannot call
  Python, but its code can call ``torch.save`` or ``torch.from_file`` on any path (planting files).

So each format is checked against an allow-list of the members its current writer produces, each
for its expected kind (raw tensor bytes, JSON of the export schema with safe names, expressions and
operators, pickles of plain tensors, TorchScript pickles of allowed globals); anything else is
refused with one line. :func:`guarded_export_load` then closes, while torch loads the program, every
path through which torch would unpickle without restriction, ``sympify`` a string or ``exec`` guard
code that was not vetted (defense in depth).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import enum
import io
import json
import pickle
import pickletools
import re
import types
import typing
import warnings
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import torch

from privaudit.errors import CheckpointError

EXPORT_FIX = "re-export the model with torch.export.save (torch >= 2.8)"
TORCHSCRIPT_FIX = "export the model with torch.export.save instead"
MAX_JSON_BYTES = 512 * 2**20  # a program's JSON; larger is not a model privaudit can audit

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_FQN = re.compile(r"(?:[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)?\Z")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*(?:e[+-]?\d+)?|inf|nan)\Z", re.IGNORECASE)


class _Unsafe(Exception):
    """Raised inside torch while a guard is on; deliberately not a RuntimeError, which torch.export.load swallows."""


def refusal(p: Path | str, why: str, fix: str) -> CheckpointError:
    """The one-line refusal of a file that could run code."""
    return CheckpointError(f"refusing to load {p}: {why}; a file like this could run code; {fix}")


def unpickling_error_is_dangerous(message: str) -> bool:
    """True when torch's restricted unpickler refused an object (a Python global, a call, an instance),
    False when it met bytes that are not a pickle at all (corrupt or truncated file)."""
    inner = message.rsplit("WeightsUnpickler error:", 1)[-1]
    return re.search(r"GLOBAL|global|reduce for unrecognized|Can only build|Can only create new object", inner) is not None


class _Inert:
    """Stands in for every global while :func:`diagnose_pickle` reads a pickle: calling, building or
    filling it does nothing, so the pickle's own callables never run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> "_Inert":
        return _Inert()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


class _GlobalRecorder(pickle.Unpickler):
    def __init__(self, f: Any, seen: list[str]) -> None:
        super().__init__(f)
        self.seen = seen

    def find_class(self, module: str, name: str) -> Any:  # every global (GLOBAL, STACK_GLOBAL, INST, OBJ, EXT)
        self.seen.append(f"{module}.{name}")
        return _Inert

    def persistent_load(self, pid: Any) -> Any:
        return None


def diagnose_pickle(data: bytes, message: str = "") -> tuple[str, str]:
    """Why torch's restricted unpickler refused ``data`` (a ``torch.save`` file: zip or bare pickle).

    ``("dangerous", global)`` when the pickle names Python globals torch's weights-only loader does not
    allow (it could run code), ``("protocol", n)`` for a plain-tensor pickle of a protocol that loader
    cannot read, ``("corrupt", "")`` when the bytes are no readable pickle. The pickle is read with every
    global replaced by an inert stand-in, so nothing in it runs.
    """
    pkl = data
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                names = [n for n in zf.namelist() if n.endswith("data.pkl")]
                pkl = zf.read(names[0]) if names else b""
        except Exception:
            return "corrupt", ""
    seen: list[str] = []
    try:
        _GlobalRecorder(io.BytesIO(pkl), seen).load()
        proto = next((arg for op, arg, _ in pickletools.genops(pkl) if op.name == "PROTO"), 0)
    except Exception:  # not a pickle, or one that breaks off
        proto = None
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except Exception:
        allowed = {"torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "collections.OrderedDict"}
    foreign = [g for g in seen if g not in allowed and not re.fullmatch(r"torch\.[A-Za-z]*Storage", g)]
    if foreign:
        return "dangerous", ", ".join(list(dict.fromkeys(foreign))[:3])
    if unpickling_error_is_dangerous(message):
        return "dangerous", ""
    if proto is None:
        return "corrupt", ""
    return "protocol", str(proto)


def restricted_load(data: bytes) -> Any:
    """``torch.load(weights_only=True)`` of in-memory bytes (warnings silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------------------------
# zip archives


@contextlib.contextmanager
def _archive(p: Path, data: bytes, fix: str) -> Iterator[tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo]]]:
    """The zip archive in ``data`` and its members by name relative to its one top folder;
    duplicates and strays refused.

    torch's C++ reader takes the first member's folder as the archive's and reads the first of two
    members with one name, Python's zipfile the last: two copies could show the vetter one and torch
    the other, so both are refused.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{p} is a corrupt zip archive ({exc}); copy or export it again") from None
    with zf:
        yield zf, _members(p, zf, fix)


def _members(p: Path, zf: zipfile.ZipFile, fix: str) -> dict[str, zipfile.ZipInfo]:
    infos = zf.infolist()
    if not infos:
        raise CheckpointError(f"{p} is an empty zip archive, not a model; export it again")
    root = infos[0].filename.split("/", 1)[0]
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        if not name.startswith(root + "/") or name.endswith("/"):
            raise refusal(p, f"its member {name!r} lies outside the archive folder {root}/", fix)
        rel = name[len(root) + 1 :]
        if rel in members:
            raise refusal(p, f"it holds two members named {name!r} (torch and privaudit could read different ones)", fix)
        members[rel] = info
    return members


def _read(p: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int = MAX_JSON_BYTES) -> bytes:
    if info.file_size > limit:
        raise CheckpointError(f"{p}: member {info.filename} is {info.file_size} bytes, far more than torch writes there; the file is corrupt or not a model")
    try:
        return zf.read(info)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise CheckpointError(f"{p} is a corrupt zip archive ({info.filename}: {exc}); copy or export it again") from None


def _is_pickle_or_zip(zf: zipfile.ZipFile, info: zipfile.ZipInfo, *, any_protocol: bool = False) -> bool:
    """Raw bytes (tensor data, extra files) that are really a pickle or a zip archive: a payload left for
    a careless reader. Protocol 0/1 pickles (text) are looked for only with ``any_protocol``."""
    with zf.open(info) as fh:
        head = fh.read(4)
    if head.startswith(b"PK\x03\x04"):
        return True
    binary = len(head) >= 2 and head[0] == 0x80 and head[1] <= 5
    if not (binary or (any_protocol and head and info.file_size <= MAX_JSON_BYTES)):
        return False
    try:  # float bytes or text that happen to start like a pickle do not parse as one to the end
        data = zf.read(info)
        end = max(pos for _, _, pos in pickletools.genops(data))
        return end == len(data) - 1
    except Exception:
        return False


# ----------------------------------------------------------------------------------------------
# torch.export (.pt2)


def vet_export_archive(p: Path, data: bytes) -> None:
    """Refuse a ``.pt2`` archive (given as its bytes) unless every member is one that
    ``torch.export.save`` writes, of the expected kind. Raises CheckpointError."""
    fix = EXPORT_FIX
    with _archive(p, data, fix) as (zf, members):
        if "archive_format" not in members:
            raise CheckpointError(f"{p} is a torch.export archive of torch 2.7 or older, which privaudit cannot vet safely; {fix}")
        if _read(p, zf, members["archive_format"], 64).strip() != b"pt2":
            raise CheckpointError(f"{p} is not a torch.export program (archive_format is not 'pt2'); {fix}")
        if "archive_version" not in members or _read(p, zf, members["archive_version"], 64).strip() != b"0":
            raise CheckpointError(f"{p} is a torch.export archive of a version this torch ({torch.__version__}) cannot read; {fix}")
        if "models/model.json" not in members:
            raise CheckpointError(f"{p} holds no exported program (models/model.json is missing); {fix}")
        configs: dict[str, dict[str, Any]] = {}
        for kind in ("weights", "constants"):
            name = f"data/{kind}/model_{kind}_config.json"
            if name in members:
                configs[kind] = _vet_payload_config(p, kind, _json(p, zf, members[name]), members)
        for rel, info in members.items():
            _vet_export_member(p, zf, rel, info, configs)
        _ProgramCheck(p).run(_json(p, zf, members["models/model.json"]))


def _json(p: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Any:
    try:
        return json.loads(_read(p, zf, info).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CheckpointError(f"{p}: member {info.filename} is not valid JSON; the file is corrupt, {EXPORT_FIX}") from None


_EXPORT_FIXED = {
    "archive_format",
    "archive_version",
    "byteorder",
    ".data/version",
    ".data/serialization_id",
    "models/model.json",
    "data/weights/model_weights_config.json",
    "data/constants/model_constants_config.json",
}
_RAW = re.compile(r"data/(weights/weight|constants/tensor)_\d+\Z")


def _vet_export_member(p: Path, zf: zipfile.ZipFile, rel: str, info: zipfile.ZipInfo, configs: dict[str, dict[str, Any]]) -> None:
    fix = EXPORT_FIX
    name = info.filename
    if rel in _EXPORT_FIXED:
        if rel in ("byteorder", ".data/version", ".data/serialization_id"):
            if not re.fullmatch(rb"[A-Za-z0-9_.\-]*\n?", _read(p, zf, info, 256)):
                raise refusal(p, f"its member {name} is not the short text torch writes there", fix)
        return
    if _RAW.match(rel):
        kind, file = rel.split("/")[1:]
        if file not in configs.get(kind, {}):
            raise refusal(p, f"its member {name} is not listed in data/{kind}/model_{kind}_config.json", fix)
        if _is_pickle_or_zip(zf, info):
            raise refusal(p, f"its tensor member {name} holds a pickle or zip archive instead of raw tensor bytes", fix)
        return
    if rel in ("data/weights/model.pt", "data/constants/model.pt", "data/sample_inputs/model.pt"):
        _vet_pickled_tensors(p, rel, name, _read(p, zf, info, 2**40))
        return
    if rel.startswith("extra/"):
        if _is_pickle_or_zip(zf, info, any_protocol=True):
            raise refusal(p, f"its extra file {name} holds a pickle or zip archive where torch.export.save writes text", fix)
        try:  # torch.export.load reads extra files as text, nothing more
            _read(p, zf, info).decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(f"{p}: extra file {name} is not UTF-8 text; the file is corrupt, {fix}") from None
        return
    if rel.startswith("data/aotinductor/"):
        raise refusal(p, f"it holds AOTInductor-compiled code ({name}), a shared library torch would load", fix)
    if rel.startswith("models/"):
        raise refusal(p, f"it holds a second program ({name}); privaudit loads only the one torch.export.save writes", fix)
    raise refusal(p, f"it holds a member torch.export.save does not write ({name})", fix)


def _vet_pickled_tensors(p: Path, rel: str, name: str, data: bytes) -> None:
    """Legacy weights/constants (a dict of tensors) and sample inputs ((args, kwargs) of tensors)
    must load under the restricted unpickler, holding nothing but tensors and plain values."""
    fix = EXPORT_FIX
    if not data and rel == "data/sample_inputs/model.pt":
        return  # a program exported without example inputs
    try:
        obj = restricted_load(data)
    except pickle.UnpicklingError as exc:
        kind, detail = diagnose_pickle(data, str(exc))
        if kind != "corrupt":  # even a plain pickle the restricted unpickler cannot read, torch reads unrestricted
            named = f" ({detail})" if kind == "dangerous" and detail else ""
            raise refusal(p, f"its member {name} holds pickled Python objects{named}, which torch.export.load unpickles without restriction", fix) from None
        raise CheckpointError(f"{p}: member {name} is not a readable torch file; the archive is corrupt, {fix}") from None
    except Exception:  # torch.load raises many types on garbage
        raise CheckpointError(f"{p}: member {name} is not a readable torch file; the archive is corrupt, {fix}") from None
    if rel == "data/sample_inputs/model.pt":
        ok = isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], (tuple, list)) and isinstance(obj[1], dict)
        ok = ok and _plain(obj)
    else:
        ok = isinstance(obj, dict) and all(isinstance(k, str) and _FQN.match(k) and type(v) in (torch.Tensor, torch.nn.Parameter) for k, v in obj.items())
    if not ok:
        raise refusal(p, f"its member {name} holds {type(obj).__name__} objects where torch.export.save writes plain tensors", fix)


def _plain(obj: Any, depth: int = 0) -> bool:
    """Tensors, numbers, None, and tuples/lists/dicts (identifier keys) of them."""
    if depth > 16:
        return False
    if obj is None or type(obj) in (bool, int, float, torch.Tensor, torch.nn.Parameter):
        return True
    if type(obj) in (tuple, list):
        return all(_plain(v, depth + 1) for v in obj)
    if type(obj) is dict:
        return all(isinstance(k, str) and _IDENT.match(k) and _plain(v, depth + 1) for k, v in obj.items())
    return False


def _vet_payload_config(p: Path, kind: str, config: Any, members: dict[str, zipfile.ZipInfo]) -> dict[str, Any]:
    """``data/<kind>/model_<kind>_config.json``: every payload raw tensor bytes in the archive.
    Returns {file name: payload meta}."""
    fix = EXPORT_FIX
    _ProgramCheck(p, f"data/{kind}/model_{kind}_config.json").walk(_schema().PayloadConfig, config, ("PayloadConfig", ""))
    files: dict[str, Any] = {}
    prefix = "weight_" if kind == "weights" else "tensor_"
    for fqn, meta in (config.get("config") or {}).items():
        path = meta.get("path_name", "")
        if meta.get("use_pickle"):
            raise refusal(p, f"its {kind} payload {fqn!r} is stored as a pickle ({path}), which torch.export.load unpickles without restriction", fix)
        if path.startswith(("custom_obj_", "opaque_obj_")):
            raise refusal(p, f"its constant {fqn!r} is a custom or opaque object ({path}) that torch would unpickle", fix)
        if not re.fullmatch(prefix + r"\d+", path) or meta.get("tensor_meta") is None:
            raise refusal(p, f"its {kind} payload {fqn!r} points at {path!r}, not a raw tensor file", fix)
        if f"data/{kind}/{path}" not in members:
            raise CheckpointError(f"{p}: {kind} payload {fqn!r} is missing its data (data/{kind}/{path}); the archive is truncated, {fix}")
        files[path] = meta
    return files


@lru_cache(maxsize=1)
def _schema() -> types.ModuleType:
    from torch._export.serde import schema

    return schema


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, globalns=vars(_schema()))


# String fields of the export schema by what they may hold; any other string must be an identifier.
_FREE_TEXT = {  # repr()-ed into code or never used as code
    ("Argument", "as_string"),
    ("Argument", "as_strings"),
    ("ConstantValue", "as_string"),
    ("ExportedProgram", "torch_version"),
    ("Node", "metadata"),
    ("GraphModule", "metadata"),
}
_DOTTED = {  # fully qualified names: get_attr targets (fx quotes odd atoms), module paths, type names
    ("InputToParameterSpec", "parameter_name"),
    ("InputToBufferSpec", "buffer_name"),
    ("InputToTensorConstantSpec", "tensor_constant_name"),
    ("BufferMutationSpec", "buffer_name"),
    ("ParameterMutationSpec", "parameter_name"),
    ("GradientToParameterSpec", "parameter_name"),
    ("ModuleCallEntry", "fqn"),
    ("PayloadConfig", "config"),
    ("GraphModule", "treespec_namedtuple_fields"),
    ("ExportedProgram", "opset_version"),
    ("ExportedProgram", "verifiers"),
}
_SYMPY_CALLS = {
    "Symbol", "Dummy", "Integer", "Float", "Rational", "Mul", "Add", "Pow", "Mod", "Min", "Max", "Abs",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan",
    "Equality", "Unequality", "And", "Or", "Not", "floor", "ceiling", "Piecewise", "ExprCondPair",
    "BooleanTrue", "BooleanFalse", "Tuple",
}
_HOPS = {"cond", "while_loop", "map_impl", "scan", "associative_scan", "invoke_subgraph", "wrap_with_set_grad_enabled", "wrap_with_autocast"}
_OP_NAMESPACES = {"aten", "prims", "higher_order"}


class _ProgramCheck:
    """Walks a program's JSON exactly as ``torch._export.serde`` reads it (``_dict_to_dataclass``),
    checking every value's type against the schema and every string by what torch does with it."""

    def __init__(self, p: Path, member: str = "models/model.json") -> None:
        self.p = p
        self.member = member

    def refuse(self, why: str) -> CheckpointError:
        return refusal(self.p, f"its {self.member} {why}", EXPORT_FIX)

    def run(self, program: Any) -> None:
        schema = _schema()
        self.walk(schema.ExportedProgram, program, ("ExportedProgram", ""))
        graph = program.get("graph_module", {}).get("graph", {})
        for inp in graph.get("inputs", []):
            if set(inp) != {"as_tensor"}:
                raise self.refuse(f"takes a non-tensor input ({next(iter(inp), '?')}), whose value torch pastes into guard code")

    # -- the schema walk (types) -----------------------------------------------------------------

    def walk(self, tp: Any, data: Any, ctx: tuple[str, str], depth: int = 0) -> None:
        schema = _schema()
        if depth > 200:
            raise self.refuse("is nested deeper than any exported program")
        if isinstance(tp, str):
            tp = getattr(schema, tp)
        if isinstance(tp, typing.ForwardRef):
            tp = getattr(schema, tp.__forward_arg__)
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Annotated:
            return self.walk(args[0], data, ctx, depth)
        if origin in (typing.Union, types.UnionType):
            if data is None:
                return None
            rest = [a for a in args if a is not type(None)]
            if len(rest) != 1:
                raise self.refuse(f"uses a field ({ctx[0]}.{ctx[1]}) privaudit cannot check")
            return self.walk(rest[0], data, ctx, depth)
        from torch._export.serde.union import _Union

        if isinstance(tp, type) and issubclass(tp, _Union):
            if not isinstance(data, dict) or len(data) != 1:
                raise self.refuse(f"has a malformed {tp.__name__} value")
            (key, value), = data.items()
            hints = _hints(tp)
            if key not in hints:
                raise self.refuse(f"has an unknown {tp.__name__} kind {str(key)[:40]!r}")
            self._on_field(tp.__name__, key, value)
            return self.walk(hints[key], value, (tp.__name__, key), depth + 1)
        if dataclasses.is_dataclass(tp):
            if not isinstance(data, dict):
                raise self.refuse(f"has a malformed {tp.__name__} value")
            hints = _hints(tp)
            for f in dataclasses.fields(tp):
                if f.name in data:  # torch ignores keys it does not know, and so may we
                    self._on_field(tp.__name__, f.name, data[f.name])
                    self.walk(hints[f.name], data[f.name], (tp.__name__, f.name), depth + 1)
            return None
        if origin is list:
            if not isinstance(data, list):
                raise self.refuse(f"has a malformed {ctx[0]}.{ctx[1]} (not a list)")
            for item in data:
                self.walk(args[0], item, ctx, depth + 1)
            return None
        if origin is dict:
            if not isinstance(data, dict):
                raise self.refuse(f"has a malformed {ctx[0]}.{ctx[1]} (not a mapping)")
            for k, v in data.items():
                self.string(k, ctx, key=True)
                self.walk(args[1], v, ctx, depth + 1)
            return None
        if tp is str:
            if not isinstance(data, str):
                raise self.refuse(f"has a non-text {ctx[0]}.{ctx[1]}")
            return self.string(data, ctx)
        if tp is bool:
            ok = isinstance(data, bool)
        elif tp is int or (isinstance(tp, type) and issubclass(tp, enum.Enum)):
            ok = isinstance(data, int) and not isinstance(data, bool)
        elif tp is float:
            ok = isinstance(data, (int, float)) and not isinstance(data, bool)
        else:
            raise self.refuse(f"uses a field ({ctx[0]}.{ctx[1]}) privaudit cannot check")
        if not ok:
            raise self.refuse(f"has a {type(data).__name__} where {ctx[0]}.{ctx[1]} holds a {getattr(tp, '__name__', tp)}")
        return None

    def _on_field(self, owner: str, name: str, value: Any) -> None:
        if owner in ("CustomObjArgument", "InputToCustomObjSpec") or (owner == "Argument" and name == "as_custom_obj"):
            raise self.refuse("uses a custom (torchbind/opaque) object, which torch would unpickle")
        if owner == "Graph" and name == "custom_obj_values" and value:
            raise self.refuse("uses a custom (torchbind/opaque) object, which torch would unpickle")

    # -- strings (by what torch does with them) ---------------------------------------------------

    def string(self, s: str, ctx: tuple[str, str], key: bool = False) -> None:
        if not isinstance(s, str):
            raise self.refuse(f"has a non-text key in {ctx[0]}.{ctx[1]}")
        if ctx in _FREE_TEXT and not key:
            return
        if ctx in (("Node", "target"), ("Argument", "as_operator")):
            return self.target(s)
        if ctx == ("SymExpr", "expr_str") or (ctx == ("ExportedProgram", "range_constraints") and key):
            if not sympy_expr_is_safe(s):
                raise self.refuse(f"has a symbolic expression that is not plain arithmetic on shapes ({s[:60]!r}), which torch evaluates with eval")
            return None
        if ctx == ("ExportedProgram", "guards_code"):
            if not guard_is_safe(s):
                raise self.refuse(f"has guard code that is not a comparison of input sizes ({s[:60]!r}), which torch runs with exec")
            return None
        if ctx in (("ModuleCallSignature", "in_spec"), ("ModuleCallSignature", "out_spec")):
            return self.treespec(s, ctx)
        pattern = _FQN if ctx in _DOTTED else _IDENT
        if not pattern.match(s) and not (s == "" and not key):
            raise self.refuse(f"has a name that is not an identifier in {ctx[0]}.{ctx[1]} ({s[:60]!r}), which torch pastes into generated Python code")
        return None

    def treespec(self, s: str, ctx: tuple[str, str]) -> None:
        """A pytree spec (JSON, its contexts JSON again): type names and keys only, no free text."""

        def visit(o: Any, depth: int) -> None:
            if depth > 64:
                raise self.refuse(f"has a {ctx[1]} nested too deep")
            if isinstance(o, str):
                if o.startswith(("[", "{")) or o == "null":
                    try:
                        return visit(json.loads(o), depth + 1)
                    except ValueError:
                        pass
                if not _FQN.match(o):
                    raise self.refuse(f"has a {ctx[1]} with a key that is not a name ({o[:60]!r})")
            elif isinstance(o, dict):
                for k, v in o.items():
                    visit(k, depth + 1)
                    visit(v, depth + 1)
            elif isinstance(o, list):
                for v in o:
                    visit(v, depth + 1)
            elif o is not None and not isinstance(o, (int, float, bool)):
                raise self.refuse(f"has a malformed {ctx[1]}")
            return None

        visit(s, 0)

    def target(self, s: str) -> None:
        """Operators torch resolves by attribute lookup and calls: aten/prims operators (minus those that
        read or write files), a few control-flow higher-order operators, and the symbolic-shape helpers."""
        if s in _sym_targets():
            return
        parts = s.split(".")
        if len(parts) == 5 and parts[:2] == ["torch", "ops"] and all(_IDENT.match(x) and not x.startswith("__") for x in parts[2:]):
            ns, op, overload = parts[2:]
            if ns in _OP_NAMESPACES and (ns != "higher_order" or op in _HOPS):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        packet = getattr(getattr(torch.ops, ns), op)
                        resolved = packet if ns == "higher_order" else getattr(packet, overload)
                except (AttributeError, RuntimeError):
                    raise self.refuse(f"calls an operator this torch does not have ({s}); export it with this torch version") from None
                if isinstance(resolved, torch._ops.HigherOrderOperator) or (
                    isinstance(resolved, torch._ops.OpOverload) and not _touches_files(resolved)
                ):
                    return
        raise self.refuse(f"calls {s[:80]!r}, not a tensor operator privaudit allows")


@lru_cache(maxsize=1)
def _sym_targets() -> frozenset[str]:
    """How torch.export serialises its symbolic-shape operators (operator.add, torch.sym_max, ...)."""
    import operator

    from torch._export.serde.serialize import _SYM_OPS

    return frozenset(f"{op.__module__}.{op.__name__}" for op in (*_SYM_OPS, operator.getitem))


def _touches_files(op: Any) -> bool:
    """aten::save, aten::from_file and any operator taking a file name."""
    try:
        args = op._schema.arguments
    except AttributeError:
        return True
    return op._schema.name in ("aten::save", "aten::from_file") or any(a.name in ("filename", "file", "path", "filepath") for a in args)


# ----------------------------------------------------------------------------------------------
# expressions torch evaluates: sympy strings (eval) and guard code (exec)

_SYMBOL_KEYWORDS = re.compile(r"[a-z_]+\Z")


def _parse(s: Any, mode: str, limit: int | None = 10_000) -> Any:
    """``ast.parse(s, mode)``, or None for a non-string, one longer than ``limit``, or one Python cannot parse."""
    if not isinstance(s, str) or (limit is not None and len(s) > limit):
        return None
    try:
        return ast.parse(s, mode=mode)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def sympy_expr_is_safe(s: str) -> bool:
    """A symbolic-shape expression as torch.export writes it (``srepr`` or ``str`` of a sympy expression):
    numbers, symbols, arithmetic, comparisons and calls of sympy/torch shape functions; a string only as
    a symbol's name or a float's digits. ``sympy.sympify`` evaluates it with ``eval``."""
    tree = _parse(s, "eval")
    if tree is None:
        return False
    calls = _SYMPY_CALLS | _torch_sympy_functions()
    string_args: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in calls):
                return False
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                text = node.args[0].value
                if node.func.id in ("Symbol", "Dummy") and _IDENT.match(text):
                    string_args.add(id(node.args[0]))
                elif node.func.id in ("Float", "Integer", "Rational") and _NUMBER.match(text):
                    string_args.add(id(node.args[0]))
            for kw in node.keywords:
                if not (kw.arg and _SYMBOL_KEYWORDS.match(kw.arg) and isinstance(kw.value, ast.Constant) and type(kw.value.value) in (bool, int)):
                    return False
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                if id(node) not in string_args:
                    return False
            elif type(node.value) not in (int, float, bool):
                return False
        elif isinstance(node, ast.Name):
            if node.id.startswith("_") or not isinstance(node.ctx, ast.Load):
                return False
        elif not isinstance(node, _ARITHMETIC):
            return False
    return True


_ARITHMETIC = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.keyword, ast.Load,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd, ast.Not,
    ast.Invert, ast.BitAnd, ast.BitOr, ast.BitXor, ast.LShift, ast.RShift,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.And, ast.Or,
)  # fmt: skip


@lru_cache(maxsize=1)
def _torch_sympy_functions() -> frozenset[str]:
    import torch.utils._sympy.functions as f

    return frozenset(getattr(f, "__all__", ()))


_GUARD_CALLS = {"abs", "min", "max", "int", "float", "round", "bool", "IsNonOverlappingAndDenseIndicator", "cast_symbool_to_symint_guardless"}
_GUARD_METHODS = {"size", "stride", "storage_offset", "dim", "numel"}
_GUARD_MATH = {"inf", "nan", "isnan", "isinf", "floor", "ceil", "trunc", "sqrt", "pi", "e"}


def guard_is_safe(s: str) -> bool:
    """A guard as torch.export records it: a condition on the inputs' sizes, e.g.
    ``(L['x'].size()[0] % 2) == 0``. ``torch.export`` ``exec``-s it when a program is loaded."""
    tree = _parse(s, "eval")
    return tree is not None and _guard_nodes_safe(tree, allowed_names={"L", "math", "inf"})


def _guard_nodes_safe(tree: ast.AST, *, allowed_names: set[str]) -> bool:
    keys: set[int] = set()
    method_attrs: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            sl = node.slice
            if isinstance(sl, ast.Constant) and (type(sl.value) is int or (isinstance(sl.value, str) and _IDENT.match(sl.value))):
                keys.add(id(sl))
            else:
                return False
        elif isinstance(node, ast.Call):
            if node.keywords:
                return False
            f = node.func
            if isinstance(f, ast.Name) and f.id in _GUARD_CALLS:
                continue
            if isinstance(f, ast.Attribute) and f.attr in _GUARD_METHODS and not node.args:
                method_attrs.add(id(f))
                continue
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "math" and f.attr in _GUARD_MATH:
                continue
            return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                if id(node) not in keys:
                    return False
            elif type(node.value) not in (int, float, bool) and node.value is not None:
                return False
        elif isinstance(node, ast.Attribute):
            ok = id(node) in method_attrs or (isinstance(node.value, ast.Name) and node.value.id == "math" and node.attr in _GUARD_MATH)
            if not ok:
                return False
        elif isinstance(node, ast.Name):
            if not isinstance(node.ctx, ast.Load) or (node.id not in allowed_names and node.id not in _GUARD_CALLS):
                return False
        elif not isinstance(node, (*_ARITHMETIC, ast.Subscript, ast.Call, ast.IfExp, ast.Tuple)):
            return False
    return True


def _guards_fn_is_safe(code: str) -> bool:
    """The function torch.export builds from a program's guards before ``exec``:
    ``def _(*args):`` then ``torch._assert(<guard>, "<message>")`` lines and ``return``."""
    tree = _parse(code, "exec", limit=None)
    if tree is None or len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef):
        return False
    fn = tree.body[0]
    a = fn.args
    if fn.decorator_list or fn.returns or a.args or a.posonlyargs or a.kwonlyargs or a.kwarg or a.defaults or a.kw_defaults:
        return False
    if a.vararg is None or a.vararg.annotation is not None:
        return False
    for stmt in fn.body:
        if isinstance(stmt, ast.Return) and (stmt.value is None or (isinstance(stmt.value, ast.Constant) and stmt.value.value is None)):
            continue
        if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
            return False
        call = stmt.value
        f = call.func
        if not (isinstance(f, ast.Attribute) and f.attr == "_assert" and isinstance(f.value, ast.Name) and f.value.id == "torch"):
            return False
        if len(call.args) != 2 or call.keywords or not (isinstance(call.args[1], ast.Constant) and isinstance(call.args[1].value, str)):
            return False
        if not _guard_nodes_safe(ast.Expression(call.args[0]), allowed_names={"args", "L", "math", "inf"}):
            return False
    return True


# ----------------------------------------------------------------------------------------------
# loading a vetted program with torch's unrestricted paths closed


@contextlib.contextmanager
def guarded_export_load() -> Iterator[list[str]]:
    """While active: ``torch.load`` only with ``weights_only=True``, no ``pickle.loads`` or torchbind
    unpickling in torch.export's loader, ``sympy.sympify`` only of vetted expressions, and torch.export's
    guard ``exec`` only of vetted guard code. A refusal raises inside torch and is also recorded in the
    yielded list, so a caller sees it even where torch catches the exception."""
    import sympy
    import torch.export._unlift as unlift
    import torch.export.pt2_archive._package as package

    refused: list[str] = []
    real_load = torch.load
    real_sympify = sympy.sympify

    def fail(why: str) -> _Unsafe:
        refused.append(why)
        return _Unsafe(why)

    def load(f: Any, *args: Any, weights_only: Any = None, **kwargs: Any) -> Any:
        if weights_only is not True:
            raise fail("an unrestricted unpickle (torch.load with weights_only=False)")
        return real_load(f, *args, weights_only=True, **kwargs)

    class _NoPickle:
        def __getattr__(self, name: str) -> Any:
            raise fail(f"pickle.{name}")

    def no_torchbind(*args: Any, **kwargs: Any) -> Any:
        raise fail("a torchbind object unpickle")

    def sympify(a: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(a, str) and not sympy_expr_is_safe(a):
            raise fail(f"sympify of {a[:60]!r}")
        return real_sympify(a, *args, **kwargs)

    def exec_guards(code: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(code, str) or not _guards_fn_is_safe(code):
            raise fail("exec of unvetted guard code")
        return exec(code, *args, **kwargs)  # noqa: S102 - vetted above: comparisons of input sizes only

    patches: list[tuple[Any, str, Any]] = [
        (torch, "load", load),
        (package, "pickle", _NoPickle()),
        (torch._C, "_pickle_load_obj", no_torchbind),
        (sympy, "sympify", sympify),
        (unlift, "exec", exec_guards),  # a module global shadows the builtin inside _unlift only
    ]
    saved = [(obj, name, obj.__dict__.get(name, _MISSING)) for obj, name, _ in patches]
    try:
        for obj, name, value in patches:
            setattr(obj, name, value)
        yield refused
    finally:
        for obj, name, value in saved:
            if value is _MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, value)


_MISSING = object()


def is_guard_refusal(exc: BaseException) -> bool:
    return isinstance(exc, _Unsafe)


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Every ``torch.load`` inside runs with ``weights_only=True``, whatever the caller asked for
    (torch-fidelity opens feature-extractor weights with ``weights_only=False``)."""
    real_load = torch.load

    def load(f: Any, *args: Any, weights_only: Any = None, **kwargs: Any) -> Any:
        return real_load(f, *args, weights_only=True, **kwargs)

    torch.load = load  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.load = real_load  # type: ignore[assignment]


# ----------------------------------------------------------------------------------------------
# TorchScript

_TS_FIXED = {"data.pkl", "constants.pkl", "version", ".data/version", "byteorder", ".data/serialization_id", "traced_inputs.pkl"}
_TS_STORAGE = re.compile(r"(data|constants|traced_inputs|\.data)/\d+(\.storage)?\Z")
_TS_CODE = re.compile(r"code/[A-Za-z0-9_./]+\.py\Z")
_TS_DEBUG = re.compile(r"code/[A-Za-z0-9_./]+\.py\.debug_pkl\Z")
_TS_PICKLE_OPS = {
    "PROTO", "STOP", "MARK", "POP", "POP_MARK", "DUP", "NONE", "NEWTRUE", "NEWFALSE", "BININT", "BININT1", "BININT2",
    "LONG1", "LONG4", "BINFLOAT", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES",
    "BINBYTES8", "BINSTRING", "SHORT_BINSTRING", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_LIST",
    "LIST", "APPEND", "APPENDS", "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS", "BINGET", "LONG_BINGET", "BINPUT",
    "LONG_BINPUT", "GLOBAL", "REDUCE", "BUILD", "NEWOBJ", "BINPERSID",
}  # fmt: skip
_TS_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_qtensor"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("torch", "device"),
}
_TS_JIT_PICKLE = {"build_intlist", "build_doublelist", "build_boollist", "build_tensorlist", "build_tensor_from_id", "restore_type_tag"}
# Operators TorchScript code may call: any in these namespaces except those that read or write files.
_TS_NAMESPACES = {"aten", "prim", "prims", "quantized", "_quantized", "torchvision"}
_TS_FILE_CALL = re.compile(r"\b(?:torch|ops\.aten)\s*\.\s*(save|from_file|load)\s*\(")
_TS_OPS_NS = re.compile(r"\bops\s*\.\s*([A-Za-z_]\w*)\s*\.")


def _ts_global_ok(module: str, name: str) -> bool:
    if module.startswith("__torch__.") or module == "__torch__":
        # TorchScript classes compiled from the archive's own code/, resolved in C++ (never imported)
        return all(_IDENT.match(x) for x in module.split(".")) and _IDENT.match(name) is not None
    if module == "torch" and re.fullmatch(r"[A-Za-z0-9]*Storage", name):
        return True
    if module == "torch.jit._pickle":
        return name in _TS_JIT_PICKLE
    return (module, name) in _TS_GLOBALS


def scan_torchscript_pickle(data: bytes) -> str | None:
    """None when ``data`` is a pickle TorchScript writes (protocol 2, allowed globals and opcodes only);
    else why not. Raises ValueError for bytes that are not a pickle at all."""
    seen_stop = False
    for op, arg, _ in pickletools.genops(data):
        if op.name not in _TS_PICKLE_OPS:
            return f"pickle opcode {op.name}"
        if op.name == "PROTO" and arg != 2:
            return f"pickle protocol {arg}"
        if op.name == "GLOBAL":
            module, _, name = str(arg).partition(" ")
            if not _ts_global_ok(module, name):
                return f"the Python global {module}.{name}"
        seen_stop = op.name == "STOP"
    if not seen_stop:
        raise ValueError("no STOP opcode")
    return None


def vet_torchscript_archive(p: Path, data: bytes) -> None:
    """Refuse a TorchScript archive (given as its bytes) with members ``torch.jit.save`` does not write,
    pickles of other globals, or code that reads or writes files. Raises CheckpointError."""
    fix = TORCHSCRIPT_FIX
    with _archive(p, data, fix) as (zf, members):
        if "data.pkl" not in members or "constants.pkl" not in members:
            raise CheckpointError(f"{p} is not a complete TorchScript archive (data.pkl or constants.pkl missing); export it again")
        for rel, info in members.items():
            name = info.filename
            if rel.startswith("extra/") or _TS_STORAGE.match(rel):
                # Extra files are never read and storages are raw bytes the pickles point at; neither
                # is ever a pickle or a zip archive (a payload waiting for a careless reader).
                if _is_pickle_or_zip(zf, info, any_protocol=rel.startswith("extra/")):
                    raise refusal(p, f"its member {name} holds a pickle or zip archive where torch.jit.save writes raw bytes or text", fix)
                continue
            if rel in ("version", ".data/version", "byteorder", ".data/serialization_id"):
                if not re.fullmatch(rb"[A-Za-z0-9_.\-]*\n?", _read(p, zf, info, 256)):
                    raise refusal(p, f"its member {name} is not the short text torch writes there", fix)
            elif (rel in _TS_FIXED and rel.endswith(".pkl")) or _TS_DEBUG.match(rel):
                try:
                    why = scan_torchscript_pickle(_read(p, zf, info))
                except Exception:  # pickletools raises ValueError and friends on bytes that are no pickle
                    raise CheckpointError(f"{p}: member {name} is not a readable pickle; the file is corrupt, export it again") from None
                if why:
                    raise refusal(p, f"its member {name} holds {why}, which TorchScript never writes", fix)
            elif _TS_CODE.match(rel):
                try:
                    code = _read(p, zf, info).decode("utf-8")
                except UnicodeDecodeError:
                    raise CheckpointError(f"{p}: code member {name} is not UTF-8 text; the file is corrupt, export it again") from None
                call = _TS_FILE_CALL.search(code)
                if call:
                    raise refusal(p, f"its TorchScript code ({name}) calls torch.{call.group(1)}, which reads or writes files anywhere", fix)
                for ns in _TS_OPS_NS.findall(code):
                    if ns not in _TS_NAMESPACES:
                        raise refusal(p, f"its TorchScript code ({name}) calls operators of the {ns!r} library, which privaudit does not allow", fix)
            else:
                raise refusal(p, f"it holds a member torch.jit.save does not write ({name})", fix)


def zip_kind(data: bytes | Path) -> str | None:
    """'torchscript', 'export' or None (a plain torch.save zip, or not a zip) by the members' names."""
    src: Any = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with zipfile.ZipFile(src) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None
    if any(n.endswith("/archive_format") or n.endswith("serialized_exported_program.json") or ("/models/" in n and n.endswith(".json")) for n in names):
        return "export"
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    return None


__all__: list[str] = [
    "EXPORT_FIX",
    "TORCHSCRIPT_FIX",
    "guard_is_safe",
    "guarded_export_load",
    "is_guard_refusal",
    "refusal",
    "diagnose_pickle",
    "restricted_load",
    "scan_torchscript_pickle",
    "sympy_expr_is_safe",
    "unpickling_error_is_dangerous",
    "vet_export_archive",
    "vet_torchscript_archive",
    "weights_only_loads",
    "zip_kind",
]
