"""Fetch transformers' generic model test-suite for the installed transformers version.

transformers' wheel ships no tests; its PyPI sdist has `tests/test_modeling_common.py` (`ModelTesterMixin`) and
`tests/test_configuration_common.py` (`ConfigTester`), but not some modules they import. This script downloads the
sdist with pip into a cache directory, extracts those two files into an importable package `transformers_tests`
and writes small stubs of our own for the missing imports. `tests/test_modeling_common_basam.py` runs the suite on
`BaSamModel` from there; nothing of transformers is copied into this repository.

Usage: python scripts/fetch_transformers_tests.py [--cache-dir DIR] [--force]
Default cache: `.cache/transformers-tests/` in the repository (or $BASAM_TRANSFORMERS_TESTS_DIR).
"""

import argparse
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import transformers

PACKAGE = "transformers_tests"
EXTRACTED = ("tests/test_modeling_common.py", "tests/test_configuration_common.py")
# Modules imported by the extracted files but absent from the sdist: minimal stand-ins written by us. The export and
# generation mixins only add tests that do not apply to BA-SAM (no torch.export suite, no `generate`).
STUBS = {
    "exporters/__init__.py": "",
    "exporters/test_export.py": '''"""Stand-in for transformers' tests/exporters/test_export.py (not in the sdist): no export tests."""


class ExportTesterMixin:
    pass
''',
    "generation/__init__.py": "",
    "generation/test_utils.py": '''"""Stand-in for transformers' tests/generation/test_utils.py (not in the sdist): no generation tests."""


class GenerationTesterMixin:
    pass
''',
    "utils/__init__.py": "",
    "utils/test_configuration_utils.py": '''"""Stand-in for transformers' tests/utils/test_configuration_utils.py (not in the sdist).

`ConfigTester.check_config_arguments_init` builds a config from these kwargs and checks each is kept (only for
configs without sub-configs).
"""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}
''',
}


def default_cache_dir() -> Path:
    env = os.environ.get("BASAM_TRANSFORMERS_TESTS_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / ".cache" / "transformers-tests"


def fetch(cache_dir: Path, version: str, force: bool = False) -> Path:
    """Make `cache_dir/transformers_tests` the test package of transformers `version`; return the package path."""
    package = cache_dir / PACKAGE
    marker = package / "VERSION"
    if not force and marker.is_file() and marker.read_text().strip() == version:
        return package
    sdist_dir = cache_dir / "sdist"
    archive = sdist_dir / f"transformers-{version}.tar.gz"
    if force or not archive.is_file():
        sdist_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"transformers=={version}",
                "-d",
                str(sdist_dir),
            ],
            check=True,
        )
    package.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        for relative in EXTRACTED:
            member = tar.extractfile(f"transformers-{version}/{relative}")
            (package / Path(relative).name).write_bytes(member.read())
    (package / "__init__.py").write_text(
        f'"""transformers {version} generic tests, fetched by {Path(__file__).name}."""\n'
    )
    for relative, text in STUBS.items():
        (package / relative).parent.mkdir(parents=True, exist_ok=True)
        (package / relative).write_text(text)
    marker.write_text(version + "\n")  # last, so an interrupted run is redone
    return package


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument("--force", action="store_true", help="download and extract again")
    args = parser.parse_args()
    package = fetch(args.cache_dir, transformers.__version__, args.force)
    print(f"transformers {transformers.__version__} tests ready in {package}")


if __name__ == "__main__":
    main()
