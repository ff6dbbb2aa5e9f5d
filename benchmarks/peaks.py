"""Accelerators' published peaks, for model FLOPs utilisation and roofline estimates.

Dense (no structured sparsity) tensor-unit rates from the vendors' data sheets, and
memory bandwidth. `float32` is the rate at which JAX computes float32 convolutions and
products by default: TF32 tensor cores on NVIDIA GPUs since Ampere, one bfloat16 pass on
TPUs (jax.default_matmul_precision 'highest' would be slower than these).
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Peak:
  name: str
  bfloat16_tflops: float
  float32_tflops: float     # as JAX computes float32 by default (see above)
  bandwidth_tb_s: float     # memory bandwidth, TB/s
  memory_gib: float

  def tflops(self, dtype: str) -> float:
    return self.bfloat16_tflops if dtype == 'bfloat16' else self.float32_tflops


# Device kinds as JAX (device_kind) and PyTorch (get_device_name) spell them; the first
# entry whose key is in the name wins, so more specific keys come first.
PEAKS = {
    'H100 PCIe': Peak('H100 PCIe', 756, 378, 2.0, 80),
    'H100 NVL': Peak('H100 NVL', 835, 418, 3.9, 94),
    'H100': Peak('H100 SXM', 989, 495, 3.35, 80),
    'H200': Peak('H200 SXM', 989, 495, 4.8, 141),
    'A100-SXM4-40GB': Peak('A100 SXM 40 GB', 312, 156, 1.555, 40),
    'A100 80GB PCIe': Peak('A100 PCIe 80 GB', 312, 156, 1.935, 80),
    'A100': Peak('A100 SXM 80 GB', 312, 156, 2.039, 80),
    'L4': Peak('L4', 121, 60, 0.3, 24),
    'TPU v5 lite': Peak('TPU v5e', 197, 197, 0.819, 16),
    'TPU v5e': Peak('TPU v5e', 197, 197, 0.819, 16),
    'TPU v5p': Peak('TPU v5p', 459, 459, 2.765, 95),
    'TPU v5': Peak('TPU v5p', 459, 459, 2.765, 95),
    'TPU v6 lite': Peak('TPU v6e', 918, 918, 1.64, 32),
    'TPU v6e': Peak('TPU v6e', 918, 918, 1.64, 32),
    'TPU v4': Peak('TPU v4', 275, 275, 1.228, 32),
}


def peak_of(device_kind: str) -> Peak | None:
  """The peaks of a device kind ('NVIDIA H100 80GB HBM3', 'TPU v5 lite', ...), or None
  for one not in the table (a CPU, say)."""
  for key, peak in PEAKS.items():
    if key in device_kind:
      return peak
  return None


def roofline_seconds(flops: float, bytes_accessed: float, peak: Peak, dtype: str) -> float:
  """The least time a step of `flops` and `bytes_accessed` can take on `peak`: bound by
  the tensor units or by memory, whichever is slower. A real step is slower still."""
  return max(flops / (peak.tflops(dtype) * 1e12), bytes_accessed / (peak.bandwidth_tb_s * 1e12))
