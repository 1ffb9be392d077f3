"""Build rotated_ddetr and its compiled ops, the extension `rotated_ddetr._C`.

- CPU kernels are always compiled (OpenMP-parallel through at::parallel_for).
- CUDA kernels are added when torch is a CUDA build and a usable CUDA toolkit is found (nvcc plus the cuBLAS and
  cuSPARSE headers that ATen's CUDA headers include), or when FORCE_CUDA=1 (then a missing toolkit is an error).
  TORCH_CUDA_ARCH_LIST is honoured; the default covers the common data-centre and consumer GPUs up to Hopper + PTX.
- ROTATED_DDETR_NO_EXT=1 installs without compiling: the package then runs on its pure-PyTorch twins.

Install with `pip install --no-build-isolation -e .` so the build uses the torch that is already installed.
"""

import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
# CUDA 13 dropped Volta (7.0); CUDA 12 still builds it.
DEFAULT_ARCHS = {12: "7.0;7.5;8.0;8.6;8.9;9.0+PTX", 13: "7.5;8.0;8.6;8.9;9.0+PTX"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _cuda_toolkit_problem(cuda_home: str | None) -> str | None:
    """Returns why the CUDA toolkit at `cuda_home` cannot build our kernels, or None when it can."""
    if cuda_home is None:
        return "no CUDA toolkit found (set CUDA_HOME)"
    needed = ["bin/nvcc", "include/cuda_runtime.h", "include/cublas_v2.h", "include/cusparse.h"]
    missing = [p for p in needed if not os.path.exists(os.path.join(cuda_home, p))]
    if missing:
        return f"the CUDA toolkit at {cuda_home} lacks {', '.join(missing)}"
    return None


def _cudart_library_dir(cuda_home: str) -> str | None:
    """A folder holding `libcudart.so` for the linker.

    pip's `cuda-toolkit` wheels ship only `lib/libcudart.so.N`; link through a symlink in the build folder.
    """
    for sub in ("lib64", "lib"):
        if os.path.exists(os.path.join(cuda_home, sub, "libcudart.so")):
            return None
    versioned = sorted(glob.glob(os.path.join(cuda_home, "lib*", "libcudart.so.*")))
    if not versioned:
        return None
    link_dir = os.path.join(ROOT, "build", "cudart_link")
    os.makedirs(link_dir, exist_ok=True)
    link = os.path.join(link_dir, "libcudart.so")
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(versioned[0], link)
    return link_dir


def _extensions():
    if _flag("ROTATED_DDETR_NO_EXT"):
        print("rotated_ddetr: ROTATED_DDETR_NO_EXT=1, not compiling ops (pure-PyTorch twins will be used)")
        return [], {}
    import torch
    from torch.utils import cpp_extension

    # Every .cpp (CPU kernels, the input checks the CUDA kernels share, the bindings) is in every build; .cu only
    # in CUDA builds.
    sources = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    cuda_sources = sorted(glob.glob("csrc/**/*.cu", recursive=True))
    define_macros = []
    extra = {"cxx": ["-O3", "-fopenmp"]}
    extra_link_args = ["-fopenmp"]
    library_dirs = []

    problem = _cuda_toolkit_problem(cpp_extension.CUDA_HOME)
    if torch.version.cuda is None:
        problem = "torch is a CPU-only build"
    with_cuda = _flag("FORCE_CUDA") or problem is None
    if _flag("FORCE_CUDA") and problem is not None:
        sys.exit(f"rotated_ddetr: FORCE_CUDA=1 but {problem}")

    if with_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            major = int(torch.version.cuda.split(".")[0])
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCHS.get(major, DEFAULT_ARCHS[13])
        archs = os.environ["TORCH_CUDA_ARCH_LIST"]
        print(f"rotated_ddetr: compiling CPU and CUDA kernels (archs {archs}, CUDA_HOME={cpp_extension.CUDA_HOME})")
        sources += cuda_sources
        define_macros += [("WITH_CUDA", None), ("ROTATED_DDETR_CUDA_ARCHS", f'"{archs}"')]
        extra["nvcc"] = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        cudart_dir = _cudart_library_dir(cpp_extension.CUDA_HOME)
        if cudart_dir:
            library_dirs.append(cudart_dir)
        ext_cls = cpp_extension.CUDAExtension
    else:
        print(f"rotated_ddetr: compiling CPU kernels only ({problem})")
        ext_cls = cpp_extension.CppExtension

    ext = ext_cls(
        name="rotated_ddetr._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=define_macros,
        extra_compile_args=extra,
        extra_link_args=extra_link_args,
        library_dirs=library_dirs,
    )
    build_ext = cpp_extension.BuildExtension.with_options(use_ninja=_ninja_available())
    return [ext], {"build_ext": build_ext}


def _ninja_available() -> bool:
    try:
        from torch.utils.cpp_extension import is_ninja_available

        return is_ninja_available()
    except ImportError:
        return False


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
