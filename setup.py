"""Builds jaxseg's optional CPU kernels (jaxseg/models/backend/kernels/).

Everything else is declared in setup.cfg. Each extension is a plain shared library that
jaxseg loads and registers with jax.ffi:
- jaxseg._onednn, oneDNN convolutions (jaxseg/models/backend/onednn.py): a C++17 compiler, XLA's
  FFI headers (from jaxlib) and oneDNN's headers and library (the PyPI packages
  onednn-devel-cpu-gomp and onednn-cpu-gomp), all of which pyproject.toml puts into the
  build environment on Linux x86-64;
- jaxseg._group_norm, GroupNorm + activation (jaxseg/models/backend/fused_norm.py): a C++17
  compiler with OpenMP and XLA's FFI headers.
Where something is missing the install goes on without that extension, printing one
line, and jaxseg uses XLA's own ops instead.

JAXSEG_SANITIZE=address builds both with AddressSanitizer (-fsanitize=address -g -O1),
for checking the kernels' memory accesses: build it out of place, never over the
extensions others use (tools/asan_check.sh does it and says how to run it).
"""

import importlib.metadata
import os
import sys

from setuptools import Extension, setup
from setuptools.errors import CompileError, LinkError
from setuptools.command.build_ext import build_ext

ONEDNN_LIBRARY = 'libdnnl.so.3'
# JAXSEG_SANITIZE -> flags added to compile and link; -O1 after the extensions' own -O2/-O3
# wins, and keeps the frames and lines of ASan's reports readable.
SANITIZERS = {'address': ['-fsanitize=address', '-fno-omit-frame-pointer', '-g', '-O1']}


def _sanitizer_flags() -> list[str]:
  name = os.environ.get('JAXSEG_SANITIZE', '').strip()
  if not name:
    return []
  if name not in SANITIZERS:
    sys.exit(f'JAXSEG_SANITIZE={name!r}: unknown sanitizer; choose one of {tuple(SANITIZERS)}')
  return SANITIZERS[name]


def _installed_file(distribution: str, path_end: str) -> str | None:
  """Where pip put the file of an installed distribution whose path ends in `path_end`. Headers and libraries are
  wheel data files, installed under the environment's prefix: in pip's isolated build
  environment that is not sys.prefix, but the distribution's RECORD knows it."""
  try:
    files = importlib.metadata.files(distribution) or []
  except importlib.metadata.PackageNotFoundError:
    return None
  for file in files:
    if str(file).endswith(path_end):
      return os.path.abspath(file.locate())
  return None


def _onednn_dirs() -> tuple[str, str] | None:
  """(include dir, library dir) of oneDNN: a DNNLROOT install, or its PyPI packages."""
  root = os.environ.get('DNNLROOT')
  if root:
    return os.path.join(root, 'include'), os.path.join(root, 'lib')
  header = _installed_file('onednn-devel-cpu-gomp', '/include/oneapi/dnnl/dnnl.hpp')
  library = _installed_file('onednn-cpu-gomp', '/' + ONEDNN_LIBRARY)
  if header and library:
    return os.path.dirname(os.path.dirname(os.path.dirname(header))), os.path.dirname(library)
  return None


class OptionalBuildExt(build_ext):
  """build_ext that reports a failed or impossible build in one line and goes on."""

  def build_extension(self, ext):
    try:
      import jaxlib  # ships XLA's FFI headers (what jax.ffi.include_dir() names)
    except ImportError as error:
      return self._skip(ext, f'XLA FFI headers not found ({error})')
    ffi_include = os.path.join(os.path.dirname(jaxlib.__file__), 'include')
    if not os.path.exists(os.path.join(ffi_include, 'xla', 'ffi', 'api', 'ffi.h')):
      return self._skip(ext, f'XLA FFI headers not found in {ffi_include}')
    # -isystem: the third-party headers' warnings are not ours to fix.
    ext.extra_compile_args += ['-isystem', ffi_include]
    if ext.name == 'jaxseg._onednn':
      dirs = _onednn_dirs()
      if dirs is None:
        return self._skip(ext, 'oneDNN not found (pip package onednn-devel-cpu-gomp, '
                          'Linux x86-64)')
      include, lib = dirs
      ext.extra_compile_args += ['-isystem', include]
      ext.library_dirs.append(lib)
    sanitizer = _sanitizer_flags()
    ext.extra_compile_args += sanitizer
    ext.extra_link_args += sanitizer
    try:
      super().build_extension(ext)
    except (CompileError, LinkError):
      self._skip(ext, 'the C++ compiler failed (its messages are above)')
    except Exception as error:  # no compiler, or anything else: never fail the install
      self._skip(ext, f'{type(error).__name__}: {error}')

  def _skip(self, ext, reason: str) -> None:
    what = SKIPPED[ext.name]
    print(f'jaxseg: {what} not built, XLA\'s will be used: {reason}', file=sys.stderr)


SKIPPED = {'jaxseg._onednn': 'oneDNN convolutions',
           'jaxseg._group_norm': 'fused GroupNorm kernel'}

setup(
    ext_modules=[
        Extension('jaxseg._onednn', ['jaxseg/models/backend/kernels/onednn_conv.cc'], language='c++',
                  extra_compile_args=['-std=c++17', '-O2'],
                  extra_link_args=[f'-l:{ONEDNN_LIBRARY}'], optional=True),
        # -O3: the row loops must be vectorised (group_norm.cc); OpenMP threads them.
        Extension('jaxseg._group_norm', ['jaxseg/models/backend/kernels/group_norm.cc'], language='c++',
                  depends=['jaxseg/models/backend/kernels/group_norm_passes.inc'],
                  extra_compile_args=['-std=c++17', '-O3', '-fopenmp'],
                  extra_link_args=['-fopenmp'], optional=True),
    ],
    cmdclass={'build_ext': OptionalBuildExt},
)
