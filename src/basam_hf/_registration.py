"""Registering the `basam` model type with transformers' Auto classes on `import basam_hf`, without importing torch
or transformers then.

The registration needs transformers' Auto modules (importing them imports torch: seconds), and `import basam_hf` must
stay cheap (`basam-hf --help` imports the package). So it runs when the Auto modules exist: at once for those already
imported, otherwise as soon as the import that loads them is complete. A finder on `sys.meta_path` wraps the loaders
of transformers' and basam_hf's modules while registrations are pending, and runs them when no such module is
half-initialized any more (SAM's configuration, which the registration imports, reads `modeling_auto` as it is
defined); it removes itself once all four have run. Either way, `import basam_hf` followed by
`AutoModel.from_pretrained(<basam folder>)` or `pipeline("mask-generation", <basam folder>)` loads `BaSamModel`
without `trust_remote_code` (tests/test_cli.py checks both import orders in fresh interpreters).

The remote-code side (the `auto_map` written into saved folders, the code files copied next to the weights) is set up
by the class modules themselves: `register_for_auto_class` at the end of `configuration_basam`, `modeling_basam` and
`processing_basam`.
"""

import sys
import threading
import warnings
from collections.abc import Callable

_AUTO = "transformers.models.auto."

# Each registration imports the class modules when it runs: they import torch and transformers (see above).


def _register_config(module) -> None:
    from .configuration_basam import BaSamConfig

    module.AutoConfig.register(BaSamConfig.model_type, BaSamConfig, exist_ok=True)


def _register_models(module) -> None:
    from .configuration_basam import BaSamConfig
    from .modeling_basam import BaSamModel

    module.AutoModel.register(BaSamConfig, BaSamModel, exist_ok=True)
    module.AutoModelForMaskGeneration.register(BaSamConfig, BaSamModel, exist_ok=True)


def _register_image_processor(module) -> None:
    from .configuration_basam import BaSamConfig
    from .processing_basam import BaSamImageProcessor

    module.AutoImageProcessor.register(
        BaSamConfig, image_processor_classes={"pil": BaSamImageProcessor}, exist_ok=True
    )


def _register_processor(module) -> None:
    from .configuration_basam import BaSamConfig
    from .processing_basam import BaSamProcessor

    module.AutoProcessor.register(BaSamConfig, BaSamProcessor, exist_ok=True)


# transformers module -> what to register with the Auto classes it defines
REGISTRATIONS: dict[str, Callable] = {
    _AUTO + "configuration_auto": _register_config,
    _AUTO + "modeling_auto": _register_models,
    _AUTO + "image_processing_auto": _register_image_processor,
    _AUTO + "processing_auto": _register_processor,
}
_pending = dict(REGISTRATIONS)
_executing: set[str] = set()  # modules (of transformers and basam_hf) whose code is running, as seen by the finder
_registering = False
_lock = threading.Lock()
_WATCHED_PREFIXES = ("transformers.", "basam_hf.")


def _register_pending() -> None:
    """Run the pending registrations whose Auto module is loaded, once it is safe.

    Not while a module of transformers or basam_hf is still executing: a registration imports basam_hf's modules,
    which import parts of transformers (and SAM's configuration reads `modeling_auto` as it is defined), so any of
    them half-initialized would fail. The finder calls this again after each such module, so the registrations run
    when the outermost import is complete, before control returns to the code that imported. A registration that
    fails only warns: transformers keeps working, and BA-SAM still loads with `BaSamModel.from_pretrained` or
    `trust_remote_code=True`."""
    global _registering
    while True:
        with _lock:
            if _registering or _executing:
                return
            ready = [name for name in _pending if name in sys.modules]
            if not ready:
                if not _pending and _finder in sys.meta_path:
                    sys.meta_path.remove(_finder)  # all done: stop looking at every import
                return
            _registering = True
            registrations = [(name, _pending.pop(name)) for name in ready]
        try:
            for name, register in registrations:
                try:
                    register(sys.modules[name])
                except Exception as error:  # noqa: BLE001 - a failed registration must not break transformers
                    warnings.warn(
                        f"basam_hf could not register the 'basam' model type with {name}: {error!r}. Load BA-SAM "
                        "with basam_hf.BaSamModel.from_pretrained, or trust_remote_code=True.",
                        stacklevel=2,
                    )
        finally:
            with _lock:
                _registering = False


class _RegisterAfterImport:
    """A `sys.meta_path` finder that finds nothing itself. For a module of transformers or basam_hf it asks the other
    finders for the spec and wraps the spec's loader, so that [`_register_pending`] runs once the module has
    executed. Removed from `sys.meta_path` when every registration has run."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(_WATCHED_PREFIXES) or not _pending:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_module_then_register(module):
            with _lock:
                _executing.add(fullname)
            try:
                exec_module(module)
            finally:
                with _lock:
                    _executing.discard(fullname)
            _register_pending()

        loader.exec_module = exec_module_then_register  # the loader is this spec's own (one per find_spec)
        return spec


_finder = _RegisterAfterImport()


def install_auto_registration() -> None:
    """Register with the Auto modules already imported; register with the others when transformers imports them."""
    if _pending and _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
    _register_pending()


def registered() -> bool:
    """Whether every registration has run (i.e. all four Auto modules were imported after `import basam_hf`)."""
    return not _pending


__all__ = ["REGISTRATIONS", "install_auto_registration", "registered"]
