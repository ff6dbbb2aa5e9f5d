"""A benchmark's latest figures in BENCHMARKS.md, between two markers that name it; and
the machine and process facts that benchmarks print beside their figures.

Only the text between `<!-- NAME: begin ... -->` and `<!-- NAME: end -->` is replaced,
so the hand-written analysis around it stays. A file without the markers gets the
section appended at its end; a file with only one of them is refused (rather than
guessing where the figures end and someone's prose begins).
"""

import os
import platform
import resource
import tempfile


def markers(name: str) -> tuple[str, str]:
  return (f'<!-- {name}: begin (written by benchmarks/{name}.py; edits here are lost) -->',
          f'<!-- {name}: end -->')


def replace_section(text: str, name: str, body: str) -> str:
  """`text` with the section `name` holding `body` (replaced, or appended if absent)."""
  begin, end = markers(name)
  start, stop = text.find(begin), text.find(end)
  section = f'{begin}\n{body.strip()}\n{end}'
  if start < 0 and stop < 0:
    return f'{text.rstrip()}\n\n{section}\n'
  if start < 0 or stop < start:
    raise ValueError(f'the markers of section {name!r} are missing or out of order; '
                     f'expected {begin!r} followed by {end!r}')
  return text[:start] + section + text[stop + len(end):]


def _read(path: str) -> str:
  if not os.path.exists(path):
    return ''
  with open(path, encoding='utf-8') as f:
    return f.read()


def check_writable(path: str, name: str) -> None:
  """Raises OSError or ValueError now if write_section(path, name, ...) would fail later."""
  replace_section(_read(path), name, '')
  directory = os.path.dirname(os.path.abspath(path))
  if not os.access(directory, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
    raise OSError('the file or its folder is not writable (or the folder does not exist)')


def write_section(path: str, name: str, body: str) -> None:
  """Replaces the section in the file at `path` atomically (a new file, then a rename)."""
  new_text = replace_section(_read(path), name, body)
  if os.path.exists(path):
    mode = os.stat(path).st_mode & 0o777
  else:  # a new file gets what open() would give it
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask
  directory = os.path.dirname(os.path.abspath(path))
  with tempfile.NamedTemporaryFile('w', encoding='utf-8', dir=directory, delete=False,
                                   suffix='.tmp') as f:
    f.write(new_text)
  os.chmod(f.name, mode)  # the temporary file is private (0600); keep the file's own mode
  os.replace(f.name, path)


def cpu_model() -> str:
  """The CPU's model name (Linux names it; elsewhere, what Python's platform knows)."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
      names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
  except OSError:  # not Linux
    names = []
  return names[0] if names else platform.processor() or platform.machine()


def machine() -> str:
  """The CPU model, its cores and the memory; the same words on every benchmark."""
  model = cpu_model()
  try:
    memory = f', {os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30:.0f} GiB'
  except (ValueError, OSError, AttributeError):
    memory = ''
  return f'{model}, {os.cpu_count()} cores{memory}'


def peak_rss_gib() -> float:
  """Peak resident memory of this process so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
