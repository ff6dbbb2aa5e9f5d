"""benchmarks/timing.py: the benchmarks' one clock."""

import pytest

from benchmarks import timing


def test_median_ms_runs_warmups_untimed_and_takes_the_median(monkeypatch):
  calls, clock = [], iter([0.0, 0.010, 1.0, 1.030, 2.0, 2.020])
  monkeypatch.setattr(timing.time, 'perf_counter', lambda: next(clock))
  assert timing.median_ms(lambda: calls.append(1), repeats=3, warmups=2) == pytest.approx(20.0)
  assert len(calls) == 5  # 2 untimed, then 3 timed (10, 30 and 20 ms)


def test_repeat_keeps_each_call_and_the_cores_it_kept_busy(monkeypatch):
  wall, cpu = iter([0.0, 1.0, 2.0, 4.0]), iter([0.0, 2.0, 5.0, 9.0])
  monkeypatch.setattr(timing.time, 'perf_counter', lambda: next(wall))
  monkeypatch.setattr(timing.time, 'process_time', lambda: next(cpu))
  results = iter('ab')
  timings = timing.repeat(lambda: next(results), 2)
  assert timings.seconds == (1.0, 2.0) and timings.result == 'b'
  assert timings.median == pytest.approx(1.5)
  assert timings.cores == pytest.approx((2.0 + 4.0) / 3.0)


def test_first_and_median_times_the_first_call_apart(monkeypatch):
  clock = iter([0.0, 5.0, 10.0, 10.1, 20.0, 20.3, 30.0, 30.2])
  monkeypatch.setattr(timing.time, 'perf_counter', lambda: next(clock))
  assert timing.first_and_median(lambda: None, 3) == pytest.approx((5.0, 0.2))


def test_a_past_deadline_stops_the_calls_after_two():
  calls = []
  timings = timing.repeat(lambda: calls.append(1), 10, warmups=1,
                          deadline=timing.deadline_after(-1.0))
  assert len(timings.seconds) == 2 and len(calls) == 3
  assert len(timing.repeat(lambda: None, 4, deadline=timing.deadline_after(60.0)).seconds) == 4
