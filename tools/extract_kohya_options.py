"""Extract the options kohya sd-scripts accepts into lorabuild/data/kohya_options.json.

Run from the repository root::

    python tools/extract_kohya_options.py --sd-scripts vendor/sd-scripts -o lorabuild/data/kohya_options.json

It builds the real argparse parser of every script in ``SCRIPTS`` (the trainers and image generators
of each model family lorabuild drives), and instantiates kohya's dataset-config ``ConfigSanitizer``
(``library/config_util.py``) the way ``train_network.py`` does, then records what they accept. Nothing
is hand-typed: option names, types, defaults and choices come from the argparse actions, dataset-config
keys and types from the voluptuous schema objects.

A script that defines ``setup_parser()`` (every ``*_train_network.py``, ``gen_img.py``,
``lumina_minimal_inference.py``) is imported and that function called. The other minimal-inference
scripts build their parser inline under ``if __name__ == "__main__":`` (flux, sd3) or inside a
``parse_args()`` function that ``main()`` calls (hunyuan_image, anima); those are run as ``__main__``
with ``argparse.ArgumentParser.parse_known_args`` replaced by a trap that hands back the parser it was
called on. The block runs only up to its parse (flux's and sd3's ask ``get_preferred_device()`` first);
no model is loaded.

kohya imports torch, diffusers, transformers and friends at module level. So that this tool runs
anywhere (CI without a GPU stack), every import that is neither the standard library nor a module of
the sd-scripts checkout is answered with an inert fake module; only ``voluptuous`` is used for real
when it is installed, else a small stand-in that records the schema structure. Pass ``--real-imports``
to import everything for real instead (in kohya's own venv); the output must be identical, which is how
the stubbing is verified.

The output is deterministic: the same checkout gives a byte-identical file.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.abc
import importlib.machinery
import json
import os
import runpy
import sys
import types
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lorabuild.kohya.options import SCRIPTS  # the one list of the scripts the data file covers

PINNED_COMMIT = "48d368fa557731ad0488c07304dfeba8c07910eb"
# What train_network.py passes to ConfigSanitizer (TN:517), with --masked_loss off.
SANITIZER_FLAGS = {
    "support_dreambooth": True,
    "support_finetuning": True,
    "support_controlnet": False,
    "support_dropout": True,
}
GENERATED_BY = "tools/extract_kohya_options.py"
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "lorabuild" / "data" / "kohya_options.json"
# Imported by the standard library itself (copy and pickle probe for Jython's org.python.core):
# left to fail as usual.
NEVER_STUBBED = frozenset({"org"})


# --------------------------------------------------------------------------------------------
# Inert fakes for heavy third-party modules
# --------------------------------------------------------------------------------------------


class _FakeMeta(type):
    """Metaclass of fake classes: any attribute of a fake class is another fake class."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _fake_class(f"{cls.__qualname__}.{name}")

    def __getitem__(cls, item: Any) -> Any:
        return cls

    def __iter__(cls) -> Iterator[Any]:
        return iter(())

    def __bool__(cls) -> bool:
        return True


class _Fake(metaclass=_FakeMeta):
    """An instance that absorbs every operation; falsy, so ``is_available()`` checks say no."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _Fake()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Used as a decorator (``@torch.no_grad()``): hand the function back unchanged.
        if len(args) == 1 and not kwargs and callable(args[0]):
            return args[0]
        return _Fake()

    def __bool__(self) -> bool:
        return False

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __getitem__(self, item: Any) -> Any:
        return _Fake()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def __int__(self) -> int:
        return 0

    def __index__(self) -> int:
        return 0

    def __float__(self) -> float:
        return 0.0

    def __lt__(self, other: Any) -> bool:
        return False

    __le__ = __gt__ = __ge__ = __lt__

    def _absorb(self, *other: Any) -> Any:
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _absorb
    __truediv__ = __rtruediv__ = __floordiv__ = __pow__ = __neg__ = __or__ = __ror__ = _absorb

    def __repr__(self) -> str:
        return "<kohya-extract fake>"


_FAKE_CLASSES: dict[str, type] = {}


def _fake_class(qualname: str) -> type:
    if qualname not in _FAKE_CLASSES:
        _FAKE_CLASSES[qualname] = _FakeMeta(qualname.rsplit(".", 1)[-1], (_Fake,), {"__qualname__": qualname})
    return _FAKE_CLASSES[qualname]


class _FakeModule(types.ModuleType):
    """A module whose every attribute is a fake class; also a package, so submodules import."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__path__: list[str] = []
        self.__version__ = "0.0.0"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        value = _fake_class(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


class _FakeLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _FakeModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class _StubFinder(importlib.abc.MetaPathFinder):
    """Answers every import outside the standard library and the sd-scripts checkout with a fake."""

    def __init__(self, sd_scripts: Path, real: frozenset[str]) -> None:
        self.local = {p.stem if p.suffix == ".py" else p.name for p in sd_scripts.iterdir()}
        self.real = real
        self.stubbed: set[str] = set()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        top = fullname.partition(".")[0]
        if top in sys.stdlib_module_names or top in self.local or top in self.real or top in NEVER_STUBBED:
            return None
        self.stubbed.add(top)
        return importlib.machinery.ModuleSpec(fullname, _FakeLoader(), is_package=True)


def _install_voluptuous_standin() -> None:
    """A stand-in for ``voluptuous`` that only records schema structure (used when it is not installed)."""
    mod = types.ModuleType("voluptuous")

    class Invalid(Exception):
        pass

    class MultipleInvalid(Invalid):
        pass

    class Marker:
        def __init__(self, schema: Any, *args: Any, **kwargs: Any) -> None:
            self.schema = schema

        def __str__(self) -> str:
            return str(self.schema)

        def __hash__(self) -> int:
            return hash(self.schema)

        def __eq__(self, other: object) -> bool:
            return bool(self.schema == other)

    class Required(Marker):
        pass

    class Any_:
        def __init__(self, *validators: Any, **kwargs: Any) -> None:
            self.validators = list(validators)

    Any_.__name__ = "Any"

    class ExactSequence:
        def __init__(self, validators: Any, **kwargs: Any) -> None:
            self.validators = validators

    class Object(dict[Any, Any]):
        def __init__(self, schema: Any, cls: Any = None) -> None:
            super().__init__(schema)

    class Schema:
        def __init__(self, schema: Any, required: bool = False, extra: int = 0) -> None:
            self.schema = schema
            self.extra = extra

        def __call__(self, data: Any) -> Any:
            raise NotImplementedError("the voluptuous stand-in cannot validate")

    for name, value in {
        "Invalid": Invalid,
        "MultipleInvalid": MultipleInvalid,
        "Marker": Marker,
        "Required": Required,
        "Optional": Marker,
        "Any": Any_,
        "ExactSequence": ExactSequence,
        "Object": Object,
        "Schema": Schema,
        "ALLOW_EXTRA": 1,
        "PREVENT_EXTRA": 0,
        "REMOVE_EXTRA": 2,
    }.items():
        setattr(mod, name, value)
    sys.modules["voluptuous"] = mod


def _prepare_imports(sd_scripts: Path, real_imports: bool) -> _StubFinder | None:
    sys.dont_write_bytecode = True  # leave no __pycache__ in the kohya checkout
    sys.path.insert(0, str(sd_scripts))
    if real_imports:
        return None
    try:
        importlib.import_module("voluptuous")
    except ImportError:
        _install_voluptuous_standin()
    finder = _StubFinder(sd_scripts, real=frozenset({"voluptuous"}))
    sys.meta_path.insert(0, finder)
    return finder


# --------------------------------------------------------------------------------------------
# Options of each script
# --------------------------------------------------------------------------------------------

_TYPE_NAMES: dict[Any, str] = {str: "str", int: "int", float: "float", Path: "path", None: "str"}


def _type_name(action: argparse.Action) -> str:
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        return "bool"
    if action.type in _TYPE_NAMES:
        return _TYPE_NAMES[action.type]
    name = getattr(action.type, "__name__", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise SystemExit(f"option {action.dest}: cannot name its type {action.type!r}")
    # Custom converters (train_util.add_optimizer_arguments' int_or_float) are named after themselves.
    return name


def _kind(action: argparse.Action) -> str:
    if isinstance(action, argparse._StoreTrueAction):
        return "flag"
    if type(action) is not argparse._StoreAction:
        raise SystemExit(f"option {action.dest}: unsupported argparse action {type(action).__name__}")
    return "value" if action.nargs in (None, "?") else "list"


def _jsonable(value: Any, where: str) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v, where) for v in value]
    raise SystemExit(f"{where}: value {value!r} is not JSON-serialisable")


def _option_entry(action: argparse.Action) -> dict[str, Any]:
    return {
        "option_strings": list(action.option_strings),
        "kind": _kind(action),
        "type": _type_name(action),
        "nargs": action.nargs if _kind(action) == "list" else None,
        "default": _jsonable(action.default, f"option {action.dest} default"),
        "choices": None
        if action.choices is None
        else _jsonable(list(action.choices), f"{action.dest} choices"),
    }


class _ParserCaught(BaseException):
    """Raised by the parse trap; a BaseException so a script's ``except Exception`` cannot swallow it."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


def _parser_of_main_block(script: Path) -> argparse.ArgumentParser:
    """The parser a script's ``__main__`` block parses its command line with, caught at the parse."""

    def trap(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _ParserCaught(self)

    original = argparse.ArgumentParser.parse_known_args
    saved_argv = sys.argv
    argparse.ArgumentParser.parse_known_args = trap  # type: ignore[method-assign]
    sys.argv = [str(script)]
    try:
        # What the block prints before parsing (flux's get_preferred_device) goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            runpy.run_path(str(script), run_name="__main__")
    except _ParserCaught as caught:
        return caught.parser
    finally:
        argparse.ArgumentParser.parse_known_args = original  # type: ignore[method-assign]
        sys.argv = saved_argv
    raise SystemExit(f"{script.name}: its __main__ block finished without parsing a command line")


def _script_parser(sd_scripts: Path, script: str) -> argparse.ArgumentParser:
    module = importlib.import_module(script.removesuffix(".py"))
    setup_parser = getattr(module, "setup_parser", None)
    if callable(setup_parser):
        parser: argparse.ArgumentParser = setup_parser()
        return parser
    return _parser_of_main_block(sd_scripts / script)


def _script_options(sd_scripts: Path, script: str) -> dict[str, Any]:
    parser = _script_parser(sd_scripts, script)
    module_name = script.removesuffix(".py")
    options: dict[str, Any] = {}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action.dest in options:
            raise SystemExit(f"{module_name}: option {action.dest} defined twice")
        options[action.dest] = _option_entry(action)
    return {"reads_config_file": "config_file" in options, "options": options}


# --------------------------------------------------------------------------------------------
# Dataset-config schema (library/config_util.py ConfigSanitizer)
# --------------------------------------------------------------------------------------------

_SCHEMA_TYPE_NAMES: dict[Any, str] = {
    int: "int",
    float: "float",
    bool: "bool",
    str: "str",
    dict: "dict",
    None: "null",
}


def _describe(validator: Any, where: str) -> str:
    """A short type expression for a voluptuous validator: ``int``, ``float|int``, ``[float,float]``."""
    if validator is None or isinstance(validator, type):
        if validator in _SCHEMA_TYPE_NAMES:
            return _SCHEMA_TYPE_NAMES[validator]
        raise SystemExit(f"{where}: cannot describe type {validator!r}")
    kind = type(validator).__name__
    if kind == "Any":
        return "|".join(_describe(v, where) for v in validator.validators)
    if kind == "ExactSequence":
        return "[" + ",".join(_describe(v, where) for v in validator.validators) + "]"
    if isinstance(validator, functools.partial):
        # ConfigSanitizer wraps its two converters in partial(converter, klass); the converter's
        # name says which ExactSequence/Any schema it applies to klass.
        func_name = validator.func.__name__
        (klass,) = validator.args
        item = _describe(klass, where)
        if func_name.endswith("validate_and_convert_scalar_or_twodim"):
            return f"{item}|[{item},{item}]"
        if func_name.endswith("validate_and_convert_twodim"):
            return f"[{item},{item}]"
    raise SystemExit(f"{where}: cannot describe validator {validator!r}")


def _describe_mapping(schema: Mapping[Any, Any], where: str) -> tuple[dict[str, str], list[str]]:
    keys: dict[str, str] = {}
    required: list[str] = []
    for key, validator in schema.items():
        name = str(key)
        if type(key).__name__ == "Required":
            required.append(name)
        if name == "subsets":
            continue  # the nested subset schema is described separately
        keys[name] = _describe(validator, f"{where}.{name}")
    return keys, sorted(required)


def _dataset_kind(
    dataset_schema: Mapping[Any, Any], subset_schema: Mapping[Any, Any], where: str
) -> dict[str, Any]:
    if dataset_schema.get("subsets") != [subset_schema]:
        raise SystemExit(f"{where}: dataset schema does not nest its subset schema as 'subsets'")
    dataset_keys, _ = _describe_mapping(dataset_schema, f"{where}.dataset")
    subset_keys, subset_required = _describe_mapping(subset_schema, f"{where}.subset")
    return {"dataset": dataset_keys, "subset": subset_keys, "subset_required": subset_required}


def kohya_sanitizer(sd_scripts: Path | None = None) -> Any:
    """kohya's own ``ConfigSanitizer``, built as train_network.py builds it (TN:517).

    With ``sd_scripts``, first makes the checkout importable (heavy modules faked); tests use this in
    a subprocess to compare lorabuild's dataset-config check with kohya's.
    """
    if sd_scripts is not None:
        _prepare_imports(sd_scripts.resolve(), real_imports=False)
    config_util = importlib.import_module("library.config_util")
    return config_util.ConfigSanitizer(**SANITIZER_FLAGS)


def _dataset_config() -> dict[str, Any]:
    sanitizer = kohya_sanitizer()
    general, _ = _describe_mapping(sanitizer.general_schema, "general")
    top = sanitizer.user_config_validator.schema
    argparse_schema = sanitizer.argparse_config_validator.schema
    argparse_keys, _ = _describe_mapping(getattr(argparse_schema, "schema", argparse_schema), "argparse")
    return {
        "sanitizer_flags": dict(SANITIZER_FLAGS),
        "top_level": sorted(str(k) for k in top),
        "general": general,
        "dreambooth": _dataset_kind(sanitizer.db_dataset_schema, sanitizer.db_subset_schema, "dreambooth"),
        "fine_tuning": _dataset_kind(sanitizer.ft_dataset_schema, sanitizer.ft_subset_schema, "fine_tuning"),
        # The parsed training options are validated against this schema too (CU:381-388), so these
        # --config_file keys must have these types (None values are skipped). resolution and
        # face_crop_aug_range are converted from strings before that check.
        "argparse_checked": argparse_keys,
    }


# --------------------------------------------------------------------------------------------


def extract(sd_scripts: Path, commit: str, real_imports: bool = False) -> dict[str, Any]:
    """Everything the data file holds, as a JSON-ready dict."""
    sd_scripts = sd_scripts.resolve()
    if not (sd_scripts / "train_network.py").is_file():
        raise SystemExit(f"{sd_scripts}: not a kohya sd-scripts checkout (no train_network.py)")
    finder = _prepare_imports(sd_scripts, real_imports)
    cwd = Path.cwd()
    os.chdir(sd_scripts)  # a few kohya modules read files relative to the working directory
    try:
        scripts = {script: _script_options(sd_scripts, script) for script in SCRIPTS}
        dataset_config = _dataset_config()
    finally:
        os.chdir(cwd)
    if finder is not None:
        print(f"stubbed modules: {', '.join(sorted(finder.stubbed))}", file=sys.stderr)
    return {
        "format_version": 1,
        "generated_by": GENERATED_BY,
        "kohya_commit": commit,
        "scripts": scripts,
        "dataset_config": dataset_config,
    }


def render(data: Mapping[str, Any]) -> str:
    """The data file's text: sorted keys, one-space indent, trailing newline."""
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sd-scripts", type=Path, required=True, help="kohya sd-scripts checkout")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, help="JSON file to write")
    parser.add_argument("--commit", default=PINNED_COMMIT, help="kohya commit the checkout is at")
    parser.add_argument(
        "--real-imports", action="store_true", help="import torch & co. for real (verifies the stubbing)"
    )
    args = parser.parse_args(argv)
    output: Path = args.output.resolve()
    text = render(extract(args.sd_scripts, args.commit, args.real_imports))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8", newline="\n")
    counts = ", ".join(f"{s}: {len(v['options'])}" for s, v in json.loads(text)["scripts"].items())
    print(f"wrote {output} ({counts})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
