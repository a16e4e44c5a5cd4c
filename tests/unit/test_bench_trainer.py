"""bench.trainer's data and sizes (the timed runs themselves are the bench, not a test)."""

from __future__ import annotations

from bench.trainer import CPU_CONFIG, GPU_CONFIG, _param_count, mixed_length_data


def test_bench_data_is_deterministic_and_mixed_in_length() -> None:
    data = mixed_length_data(96, seed=0)
    assert data == mixed_length_data(96, seed=0)
    words = [len(" ".join(m["content"] for m in e["messages"]).split()) for e in data]
    assert min(words) < 30 and max(words) > 150  # short and long examples, so padding costs show


def test_bench_model_sizes() -> None:
    assert 0.9e9 < _param_count(GPU_CONFIG)[0] < 1.3e9
    assert _param_count(CPU_CONFIG)[0] < 5e6
