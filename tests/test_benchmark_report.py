"""benchmarks/report.py: a benchmark rewrites only its own section of BENCHMARKS.md."""

import os

import pytest

from benchmarks import report


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
