"""Benchmark: loading SmolLM2-135M from the GGUF file vs from the safetensors cache.

Both loads run in this process, into a fresh temporary cache directory, after the libraries are
imported (library import time is printed separately: it is paid once per process, cache or not).
Target (issue 3): a cached load takes <= 3 s, against ~20 s for dequantizing the GGUF file.

    python benchmarks/loading.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def main() -> None:
    t0 = time.perf_counter()
    import transformer_lens.model_bridge  # noqa: F401
    import transformers  # noqa: F401

    from circuits.model import load_model

    imports = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        load_model("smollm2-135m", cache_dir=Path(tmp))
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_model("smollm2-135m", cache_dir=Path(tmp))
        cached = time.perf_counter() - t0
    print(f"library imports (once per process): {imports:6.2f} s")
    print(f"first load (dequantize GGUF + write cache): {first:6.2f} s")
    print(f"cached load (safetensors):                  {cached:6.2f} s")
    print(f"speed-up: {first / cached:.1f}x   target cached <= 3 s: {'met' if cached <= 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
