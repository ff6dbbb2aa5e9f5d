"""Command-line plumbing of train.py, eval.py and experiment.py: --help, config files and
overrides checked with one-line errors, and the error net around the program.

What the user handed over (jaxseg.errors.UserError, and an OSError naming a file)
ends in one line `error: ...` and a non-zero exit status; a stop on a signal exits
with 128 + its number. Anything else is a bug in jaxseg: its traceback is printed,
then one line saying so. JAXSEG_TRACEBACK=1 shows the traceback of every error.
"""

import difflib
import importlib.util
import logging
import os
import signal
import sys
import threading
import traceback
import warnings
from typing import Callable

import ml_collections
from absl import flags

from jaxseg.errors import ConfigError, UserError

HELP_FLAGS = ('-h', '--help', '-help', '--helpfull', '--helpshort', '-?')
CONFIG_KEYS_POINTER = ('Config keys: any key of the config file can be set with '
                       '--config.SECTION.KEY=VALUE; README.md "Config keys" explains each, and '
                       '--config=FILE --help lists them with their values.')


def fail(message: str, status: int = 2) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(status)


def parse_flags(argv: list[str], usage: str) -> list[str]:
  """absl flag parsing with --help, and config-file and override errors in one line.

  `usage`: the program's docstring, printed first by --help.
  """
  if any(arg in HELP_FLAGS for arg in argv[1:]):
    _print_help(argv, usage)
    sys.exit(0)
  spec = _config_spec(argv)
  try:
    if spec is not None:
      _check_overrides(argv, load_config_file(spec))
    remaining = flags.FLAGS(argv)
  except ConfigError as error:
    fail(str(error))
  except flags.Error as error:  # unknown flags, missing --config, bad flag values
    fail(_first_line(error))
  except (AttributeError, KeyError, TypeError, ValueError) as error:
    # ml_collections raises these for override values it cannot parse into the key's type.
    fail(f'bad --config override: {_first_line(error)}')
  return remaining


def _config_spec(argv: list[str]) -> str | None:
  """The value of --config=SPEC or --config SPEC, if given."""
  for index, arg in enumerate(argv[1:], start=1):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and index + 1 < len(argv):
      return argv[index + 1]
  return None


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """The ConfigDict of FILE[:VARIANT]; anything wrong with the file is one ConfigError
  naming the file (and the line of its code that failed)."""
  path, _, variant = spec.partition(':')
  module = load_module(path, f'--config={spec}')
  if not callable(getattr(module, 'get_config', None)):
    raise ConfigError(f'--config={spec}: {path} defines no get_config() function')
  config = call_user_code(lambda: module.get_config(*([variant] if variant else [])), path,
                      f'--config={spec}')
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f'--config={spec}: get_config() returned a {type(config).__name__}, '
                      'not an ml_collections.ConfigDict')
  return config


def load_module(path: str, flag: str, kind: str = 'config'):
  """The Python file `path` (a config or sweep file) as a module; ConfigError if it
  does not exist or its code fails."""
  if not os.path.isfile(path):
    raise ConfigError(f'{flag}: no such {kind} file {path!r}')
  if os.getcwd() not in sys.path:  # config files import their neighbours (configs.common)
    sys.path.append(os.getcwd())
  module_spec = importlib.util.spec_from_file_location('jaxseg_user_file', path)
  module = importlib.util.module_from_spec(module_spec)
  call_user_code(lambda: module_spec.loader.exec_module(module), path, flag)
  return module


def call_user_code(function, path: str, flag: str):
  """function(), where it runs a user's file: what it raises is a ConfigError."""
  try:
    return function()
  except ConfigError:
    raise
  except ValueError as error:  # the file's own check of a value, e.g. its variant
    raise ConfigError(f'{flag}: {_first_line(error)}') from error
  except Exception as error:  # pylint: disable=broad-except
    # A config file is the user's code: what it raises is theirs, with its line.
    raise ConfigError(f'{flag}: {_where_in(path, error)}{type(error).__name__}: '
                      f'{_first_line(error)}') from error


def _where_in(path: str, error: Exception) -> str:
  """'FILE line N: ' of the deepest frame of the config file in the error's traceback."""
  if isinstance(error, SyntaxError) and error.lineno:
    return f'{path} line {error.lineno}: '
  frames = [f for f in traceback.extract_tb(error.__traceback__)
            if os.path.abspath(f.filename) == os.path.abspath(path)]
  return f'{path} line {frames[-1].lineno}: ' if frames else ''


# Keys that moved, old name -> new name, so that an old command line says where.
MOVED_KEYS = {f'model.{key}': f'compute.{key}'
              for key in ('conv_library', 'norm_kernel', 'conv3d')}


def _check_overrides(argv: list[str], config: ml_collections.ConfigDict) -> None:
  """Each --config.a.b=value names an existing key (full path and a suggestion if not)."""
  for arg in argv[1:]:
    if not arg.startswith('--config.'):
      continue
    key = arg[len('--config.'):].split('=', 1)[0]
    if key in MOVED_KEYS:
      raise ConfigError(f'--config.{key}: this key is now {MOVED_KEYS[key]!r}; use '
                        f'--config.{MOVED_KEYS[key]}=...')
    node = config
    for depth, name in enumerate(key.split('.')):
      if isinstance(node, ml_collections.ConfigDict) and name in node:
        node = node[name]
        continue
      parent = '.'.join(key.split('.')[:depth])
      siblings = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      close = difflib.get_close_matches(name, siblings, n=1)
      hint = f'; did you mean {".".join(filter(None, [parent, close[0]]))!r}?' if close else ''
      raise ConfigError(f'--config.{key}: no such config key {key!r}{hint}')


def _print_help(argv: list[str], usage: str) -> None:
  full = '--helpfull' in argv
  print(usage.strip() + '\n')
  main_module = sys.argv[0]
  text = flags.FLAGS.get_help() if full else flags.FLAGS.module_help(main_module)
  print(text.strip())
  if 'config' in flags.FLAGS:
    print('\n' + CONFIG_KEYS_POINTER)
  spec = _config_spec(argv)
  if spec is not None:
    try:
      print(f'\n{spec}:\n{load_config_file(spec)}')
    except ConfigError as error:
      print(f'\n{error}')
  if not full:
    print('\n--helpfull also lists the flags of the libraries (absl, JAX).')


def run(function: Callable[[], object]) -> None:
  """Runs `function`: a UserError or an OSError naming a file becomes one line and its
  exit status, Ctrl-C one line and 130; any other exception is reported as a bug."""
  _quiet_background_noise()
  try:
    function()
  except (UserError, OSError) as error:
    if os.environ.get('JAXSEG_TRACEBACK'):
      raise
    if isinstance(error, OSError) and not error.filename:
      _report_bug(error)  # an OSError about no file of the user's is ours
    message = _first_line(error)
    if isinstance(error, OSError):
      message = f'{error.filename}: {error.strerror or message}'
    _exit(message, getattr(error, 'exit_status', 2),
          interrupted=getattr(error, 'exit_status', 0) == 128 + signal.SIGINT)
  except KeyboardInterrupt:
    _exit('interrupted (Ctrl-C)',
          128 + signal.SIGINT, interrupted=True)
  except Exception as error:  # pylint: disable=broad-except
    _report_bug(error)


def _report_bug(error: BaseException) -> None:
  traceback.print_exception(error)
  print(f'error: unexpected {type(error).__name__}: this is a bug in jaxseg (or in a library '
        'it calls); please report it with the traceback above', file=sys.stderr)
  sys.exit(1)


def _exit(message: str, status: int, interrupted: bool) -> None:
  print(f'error: {message}', file=sys.stderr)
  if interrupted:
    # Orbax may still be writing a checkpoint in background threads; leaving through
    # the interpreter's shutdown would print their errors. The last complete
    # checkpoint is in place, the half-written one is ignored on the next start.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # pylint: disable=protected-access
  sys.exit(status)


def _quiet_background_noise() -> None:
  """Errors of background threads that the main thread raises again, and reports in one
  line, are not printed a second time:

  - Orbax reads and writes checkpoints with asyncio tasks in threads: after one fails,
    it logs the traceback, and its sibling tasks report their own failures through
    asyncio's logger and sys.unraisablehook; the failure itself reaches the main thread.
  - A full disk fails tensorboardX's writer thread and its exit handler as well as the
    main thread's own writes, which name the file.
  """
  logging.getLogger('asyncio').setLevel(logging.CRITICAL)
  logging.getLogger('absl').addFilter(
      lambda record: not (record.exc_info and 'orbax' in record.pathname))
  warnings.filterwarnings('ignore', message='coroutine .* was never awaited')
  default_unraisable, default_thread_hook = sys.unraisablehook, threading.excepthook

  def unraisable_hook(unraisable):
    echo = ('coroutine' in repr(unraisable.object) or
            isinstance(unraisable.exc_value, OSError) or
            (isinstance(unraisable.exc_value, RuntimeError)
             and 'Event loop is closed' in str(unraisable.exc_value)))
    if not echo:
      default_unraisable(unraisable)

  def thread_hook(args):
    if not issubclass(args.exc_type, OSError):
      default_thread_hook(args)
  sys.unraisablehook, threading.excepthook = unraisable_hook, thread_hook


def _first_line(error: BaseException) -> str:
  text = str(error).strip() or type(error).__name__
  return text.splitlines()[0]
