#!/usr/bin/env python
"""Install detectron2 v0.6 into the running Python environment, or keep the one already there.

There is no official detectron2 release on PyPI. The sdist ``pb1-detectron2==0.6`` holds Python
files byte-identical to the official v0.6 tag, but it needs five fixes before it works with a
current torch / numpy / Pillow (see docs/INSTALL.md):

1. ``detectron2/layers/csrc`` (C++/CUDA sources) is missing: the extension is skipped.
2. ``from detectron2 import _C`` runs at import time in three layer modules: a placeholder
   ``detectron2/_C.py`` is written that raises a clear ``ImportError`` when an op is *used*.
3. Pillow >= 10 removed ``Image.LINEAR``: replaced by ``Image.BILINEAR`` (as upstream did later).
4. numpy >= 1.24 removed ``np.bool``: replaced by ``bool``.
5. ``setup.py`` globs the model-zoo YAMLs from a top-level ``configs/`` that the sdist lacks: the
   glob is pointed at ``detectron2/model_zoo/configs`` so the wheel carries them.

A detectron2 that already imports (for example an official build from source with compiled
ops) is kept and never replaced unless ``--force`` is given.

Usage: ``python scripts/install_detectron2.py [--force] [--sdist PATH] [--wheel-dir DIR]``
"""

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tarfile
import tempfile

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_FILE = f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
PLACEHOLDER_FLAG = "DUALALIGN_PLACEHOLDER"

# Runtime deps of detectron2 that we install ourselves (its pinned black==21.4b2 is skipped).
DETECTRON2_DEPS = [
    "Pillow>=7.1",
    "matplotlib>=3.5",
    "pycocotools>=2.0.2",
    "termcolor>=1.1",
    "yacs>=0.1.8",
    "tabulate",
    "cloudpickle",
    "tqdm>4.29.0",
    "tensorboard",
    "fvcore>=0.1.5,<0.1.6",
    "iopath>=0.1.7,<0.1.10",
    "pydot",
    "omegaconf>=2.1,<2.4",
    "hydra-core>=1.1",
    "setuptools<81",  # detectron2.model_zoo imports pkg_resources
]

PLACEHOLDER_SOURCE = '''"""Placeholder for detectron2's compiled extension (written by dualalign's installer).

This detectron2 was built from the pb1-detectron2 sdist, which ships no C++/CUDA sources. Faster
R-CNN + FPN does not need them: ROIAlign and NMS come from torchvision. Deformable convolution,
rotated boxes and the fast COCO evaluator do; using one raises the ImportError below.
"""

DUALALIGN_PLACEHOLDER = True


# Read by detectron2.utils.collect_env when it prints the environment.
def get_compiler_version():
    return "none (no compiled ops: pb1-detectron2 sdist placeholder)"


def get_cuda_version():
    return "none"


def has_cuda():
    return False


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise ImportError(
        f"detectron2._C.{name} is a compiled op, and this detectron2 was installed without "
        "compiled ops (pb1-detectron2 sdist, see dualalign's README). Use an op that torchvision "
        "provides, evaluate with use_fast_impl=False, or build the official detectron2 from "
        "source with a CUDA toolchain."
    )
'''


def log(msg):
    print(f"[install_detectron2] {msg}", flush=True)


def probe_existing():
    """Return a description of an importable detectron2, or None if there is none."""
    code = (
        "import detectron2, os\n"
        "from detectron2.modeling import build_model\n"
        "from detectron2 import model_zoo\n"
        "import detectron2.data.transforms\n"
        "p = model_zoo.get_config_file('COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml')\n"
        "assert os.path.isfile(p), p\n"
        "import detectron2._C as C\n"
        f"kind = 'pb1-detectron2 sdist, patched by dualalign, no compiled ops' "
        f"if getattr(C, '{PLACEHOLDER_FLAG}', False) else 'with compiled ops'\n"
        "print(detectron2.__version__, os.path.dirname(detectron2.__file__), kind, sep='|')\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tempfile.gettempdir()
    )
    if res.returncode != 0:
        return None
    version, path, kind = res.stdout.strip().splitlines()[-1].split("|")
    return f"detectron2 {version} at {path} ({kind})"


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_sdist(dest_dir):
    """Download the sdist through pip (so pip's index configuration applies)."""
    log(f"downloading {SDIST_NAME}=={SDIST_VERSION} from the package index")
    # --no-build-isolation: setup.py imports torch while pip reads the metadata.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    cmd += ["--no-build-isolation", "-d", dest_dir, f"{SDIST_NAME}=={SDIST_VERSION}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    path = os.path.join(dest_dir, SDIST_FILE)
    if not os.path.isfile(path):
        sys.exit(f"pip download did not produce {path}")
    return path


def replace_in_file(path, pattern, repl, expect_min=1):
    with open(path) as f:
        text = f.read()
    new, n = re.subn(pattern, repl, text)
    if n < expect_min:
        sys.exit(f"{path}: expected pattern {pattern!r} not found; is this the v0.6 sdist?")
    with open(path, "w") as f:
        f.write(new)
    return n


def patch_tree(src):
    """Apply the five fixes to an extracted sdist tree."""
    setup_py = os.path.join(src, "setup.py")
    pkg = os.path.join(src, "detectron2")
    # Fix 1: no C++ sources in the sdist, so build no extension.
    replace_in_file(setup_py, r"ext_modules=get_extensions\(\),", "ext_modules=[],")
    # Fix 5: package the model-zoo configs that live inside the package.
    replace_in_file(
        setup_py,
        r'config_paths = glob\.glob\("configs/\*\*/\*\.yaml", recursive=True\)',
        'config_paths = [os.path.relpath(p, path.join("detectron2", "model_zoo")) for p in '
        'glob.glob("detectron2/model_zoo/configs/**/*.yaml", recursive=True)]',
    )
    replace_in_file(
        setup_py,
        r'\+ glob\.glob\(\s*"configs/\*\*/\*\.py", recursive=True\s*\)',
        '+ [os.path.relpath(p, path.join("detectron2", "model_zoo")) for p in '
        'glob.glob("detectron2/model_zoo/configs/**/*.py", recursive=True)]',
    )
    # Fix 2: an importable placeholder for the missing compiled extension.
    with open(os.path.join(pkg, "_C.py"), "w") as f:
        f.write(PLACEHOLDER_SOURCE)
    # Fix 3: Pillow >= 10.
    replace_in_file(
        os.path.join(pkg, "data", "transforms", "transform.py"),
        r"Image\.LINEAR\b",
        "Image.BILINEAR",
    )
    # Fix 4: numpy >= 1.24, in every file that uses the removed alias.
    n = 0
    for root, _, files in os.walk(pkg):
        for name in files:
            if name.endswith(".py"):
                p = os.path.join(root, name)
                with open(p) as f:
                    text = f.read()
                new, k = re.subn(r"\bnp\.bool\b(?!_)", "bool", text)
                if k:
                    with open(p, "w") as f:
                        f.write(new)
                    n += k
    if n == 0:
        sys.exit("no np.bool found to patch; is this the v0.6 sdist?")
    log("applied the 5 fixes: no extension, _C placeholder, Image.LINEAR, np.bool, zoo configs")


def build_and_install(sdist, wheel_dir):
    digest = sha256_of(sdist)
    if digest != SDIST_SHA256:
        sys.exit(f"{sdist}: sha256 {digest} != expected {SDIST_SHA256}; refusing to install it")
    log(f"sha256 verified: {digest}")
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = os.path.join(tmp, f"{SDIST_NAME}-{SDIST_VERSION}")
        patch_tree(src)
        os.makedirs(wheel_dir, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        subprocess.run(cmd + ["-w", wheel_dir, src], check=True, stdout=subprocess.DEVNULL)
    wheels = [w for w in os.listdir(wheel_dir) if w.startswith("pb1_detectron2-0.6")]
    if not wheels:
        sys.exit(f"no pb1_detectron2 wheel was written to {wheel_dir}")
    wheel = os.path.join(wheel_dir, sorted(wheels)[-1])
    log(f"built {wheel}")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q"] + DETECTRON2_DEPS, check=True)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", wheel]
    subprocess.run(cmd, check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if one imports")
    parser.add_argument("--sdist", help="a local pb1-detectron2-0.6.tar.gz instead of downloading")
    parser.add_argument("--wheel-dir", default=os.path.join(".cache", "wheels"))
    args = parser.parse_args()

    existing = probe_existing()
    if existing and not args.force:
        log(f"keeping the detectron2 that already imports: {existing}")
        return
    if existing:
        log(f"--force: replacing {existing}")
    if args.sdist:
        build_and_install(args.sdist, args.wheel_dir)
    else:
        with tempfile.TemporaryDirectory() as dl:
            build_and_install(fetch_sdist(dl), args.wheel_dir)
    installed = probe_existing()
    if installed is None:
        sys.exit("detectron2 was installed but does not import; see the output above")
    log(f"in use: {installed}")


if __name__ == "__main__":
    main()
