"""benchmarks/report.py: a benchmark rewrites only its own section of BENCHMARKS.md."""

import importlib.util
import os

import pytest

_SPEC = importlib.util.spec_from_file_location(
    'benchmark_report', os.path.join(os.path.dirname(__file__), '..', 'benchmarks', 'report.py'))
report = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(report)


def test_section_is_replaced_and_the_prose_around_it_kept():
  begin, end = report.markers('bench')
  other_begin, other_end = report.markers('other')
  text = (f'# Title\nprose before\n{begin}\nold table\n{end}\nprose after\n'
          f'{other_begin}\nother table\n{other_end}\n')
  new = report.replace_section(text, 'bench', '| new | table |\n')
  assert new == (f'# Title\nprose before\n{begin}\n| new | table |\n{end}\nprose after\n'
                 f'{other_begin}\nother table\n{other_end}\n')
  assert report.replace_section(new, 'bench', '| new | table |') == new  # idempotent


def test_missing_section_is_appended():
  begin, end = report.markers('bench')
  assert report.replace_section('# Title\n\n', 'bench', 'figures') == (
      f'# Title\n\n{begin}\nfigures\n{end}\n')


@pytest.mark.parametrize('broken', ['begin only', 'end only', 'end before begin'])
def test_a_half_marked_section_is_refused(broken):
  begin, end = report.markers('bench')
  text = {'begin only': f'{begin}\ntable\n', 'end only': f'table\n{end}\n',
          'end before begin': f'{end}\ntable\n{begin}\n'}[broken]
  with pytest.raises(ValueError, match='markers'):
    report.replace_section(text, 'bench', 'figures')


def test_write_section_changes_the_file_and_check_refuses_early(tmp_path):
  path = tmp_path / 'BENCHMARKS.md'
  path.write_text('# Benchmarks\nhand-written analysis\n')
  path.chmod(0o644)
  report.check_writable(str(path), 'bench')
  report.write_section(str(path), 'bench', 'first run')
  report.write_section(str(path), 'bench', 'second run')
  text = path.read_text()
  assert text.startswith('# Benchmarks\nhand-written analysis\n')
  assert 'second run' in text and 'first run' not in text
  assert [p.name for p in tmp_path.iterdir()] == ['BENCHMARKS.md']  # no temporary left
  assert path.stat().st_mode & 0o777 == 0o644  # readable by others as before, not 0600
  begin, _ = report.markers('bench')
  path.write_text(f'{begin}\nno end marker\n')
  with pytest.raises(ValueError):
    report.check_writable(str(path), 'bench')
  with pytest.raises(OSError):
    report.check_writable(str(tmp_path / 'missing' / 'BENCHMARKS.md'), 'bench')


def test_median_ms_runs_warmups_untimed_and_takes_the_median(monkeypatch):
  calls, clock = [], iter([0.0, 0.010, 1.0, 1.030, 2.0, 2.020])
  monkeypatch.setattr(report.time, 'perf_counter', lambda: next(clock))
  assert report.median_ms(lambda: calls.append(1), repeats=3, warmups=2) == pytest.approx(20.0)
  assert len(calls) == 5  # 2 untimed, then 3 timed (10, 30 and 20 ms)
