"""What every jaxseg program does first, before JAX is imported: prepare_process.

The restart with glibc's huge-page malloc is decided by restart_environment, a function of
the facts that restart_with_huge_pages gathers (the environment, the command line, the
installed accelerator plugins and device files, glibc's version and the kernel's
transparent-huge-page mode), so that each case can be tested without the host it
describes.
"""

import fnmatch
import glob
import os
import re
import sys

from jaxseg.xla_flags import (apply_default_flags, current_glibc_version,
                              enable_compilation_cache, huge_pages_environment,
                              keep_freed_host_memory)

_THP_MODE_FILE = '/sys/kernel/mm/transparent_hugepage/enabled'

# Accelerators that JAX computes on by default when their plugin is installed
# (distribution names, normalised as in PEP 503) and the kernel shows their device; a
# plugin without its device falls back to the CPU. NVIDIA GPUs are /dev/dxg under WSL2;
# TPUs from v5 on are VFIO groups (/dev/vfio/vfio alone is only the VFIO driver).
ACCELERATORS = {
    'cuda': (('jax-cuda*-plugin', 'jax-cuda*-pjrt'), ('/dev/nvidia[0-9]*', '/dev/dxg')),
    'rocm': (('jax-rocm*-plugin', 'jax-rocm*-pjrt'), ('/dev/kfd',)),
    'tpu': (('libtpu', 'libtpu-nightly'), ('/dev/accel[0-9]*', '/dev/vfio/[0-9]*')),
}


def prepare_process(*, host_memory: bool = True, compilation_cache: bool = True,
                    environ=os.environ) -> None:
  """Sets this process up as jaxseg runs; every program calls it first thing, before JAX
  is imported and before anything is printed or started.

  In order: re-executes the command with huge-page malloc where that pays
  (restart_with_huge_pages; JAXSEG_HUGE_PAGES=0: never), keeps freed host memory if
  JAXSEG_KEEP_HOST_MEMORY=1, adds jaxseg's XLA flags (JAXSEG_XLA_DEFAULTS=0: none) and
  turns on the persistent compilation cache (JAXSEG_COMPILATION_CACHE=0: off; this
  step imports JAX). host_memory=False leaves glibc's malloc as it is and
  compilation_cache=False compiles afresh: for benchmarks that measure those.
  """
  if host_memory:
    restart_with_huge_pages(environ)
    keep_freed_host_memory(environ)
  apply_default_flags(environ)
  if compilation_cache:
    enable_compilation_cache(environ)


def _normalised(name: str) -> str:
  return re.sub(r'[-_.]+', '-', name).lower()


def default_accelerator(environ, installed, devices) -> str | None:
  """The platform other than the CPU that JAX will compute on by default, or None.

  JAX_PLATFORM_NAME, else the first of JAX_PLATFORMS, names it where set. Otherwise the
  first accelerator of ACCELERATORS with a plugin among `installed` (distribution names)
  and a device among `devices` (paths of device files).
  """
  named = (environ.get('JAX_PLATFORM_NAME')
           or environ.get('JAX_PLATFORMS', '').split(',')[0]).strip().lower()
  if named:
    return None if named == 'cpu' else named
  installed = {_normalised(name) for name in installed}
  for platform, (plugins, device_files) in ACCELERATORS.items():
    if (any(fnmatch.filter(installed, plugin) for plugin in plugins)
        and any(fnmatch.filter(devices, device) for device in device_files)):
      return platform
  return None


def script_of(orig_argv) -> str | None:
  """The script that the interpreter command `orig_argv` (sys.orig_argv) runs; None for
  `-c`, `-m`, standard input and the interactive prompt."""
  args = list(orig_argv[1:])
  while args:
    arg = args.pop(0)
    if not arg.startswith('-'):
      return arg
    if arg == '-':
      return None
    if arg == '--check-hash-based-pycs':
      args = args[1:]  # its value
    elif not arg.startswith('--'):
      for position, option in enumerate(arg[1:], start=2):
        if option in 'cm':
          return None
        if option in 'WX':  # the value is the rest of this argument or the next one
          if position == len(arg):
            args = args[1:]
          break
  return None


def restart_environment(environ, *, orig_argv, argv, main_file, installed, devices,
                        glibc_version, thp_mode: str) -> dict | None:
  """The environment to re-execute this command with for huge-page malloc, or None.

  The faults it saves are the host's: none on a GPU or TPU (default_accelerator). And
  re-executing reruns the same program only where that program is a script file run
  as given: `script_of(orig_argv)` is argv[0] and the __main__ module has a file
  (`main_file`; none in a notebook, IPython or an embedded interpreter). Not under
  `-m` either: that runs tools (pytest, ipykernel) which may import a program, and a
  re-execution would repeat what the tool did so far. The rest is
  huge_pages_environment's: the switches, glibc's version and the kernel's mode.
  """
  script = script_of(orig_argv)
  if (default_accelerator(environ, installed, devices) is not None
      or script is None or not argv or argv[0] != script or main_file is None):
    return None
  return huge_pages_environment(environ, glibc_version, thp_mode)


def _thp_mode() -> str:
  try:
    with open(_THP_MODE_FILE, encoding='ascii') as f:
      return f.read()
  except OSError:
    return ''


def _installed_distributions() -> list[str]:
  # pylint: disable-next=import-outside-toplevel  (only where a restart is still open)
  import importlib.metadata
  return [d.metadata['Name'] or '' for d in importlib.metadata.distributions()]


def _device_files() -> list[str]:
  return [path for _, devices in ACCELERATORS.values() for pattern in devices
          for path in glob.glob(pattern)]


def restart_with_huge_pages(environ=os.environ) -> None:
  """Re-executes this command (same process id, arguments and interpreter options)
  with glibc's huge-page malloc, where restart_environment says so.

  XLA:CPU allocates each execution's buffers anew and glibc maps blocks that large
  afresh, so every train step faults its temporaries in again and the kernel zeroes
  them 4 KiB at a time; 2 MiB pages make the faults far fewer at the same peak memory
  (BENCHMARKS.md). glibc reads the setting only when a process starts, hence the
  restart.
  """
  glibc_version, thp_mode = current_glibc_version(), _thp_mode()
  if not sys.executable or huge_pages_environment(environ, glibc_version, thp_mode) is None:
    return  # off, done already (this is the restarted process) or of no use
  main_file = getattr(sys.modules.get('__main__'), '__file__', None)
  new_environ = restart_environment(
      environ, orig_argv=sys.orig_argv, argv=sys.argv, main_file=main_file,
      installed=_installed_distributions(), devices=_device_files(),
      glibc_version=glibc_version, thp_mode=thp_mode)
  if new_environ is not None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, new_environ)
