"""The runtimes bench measures members in (a registry): what a device runs, not only eager
PyTorch. A runtime turns a member at a precision into a `Runner`: logits for a batch (its own
accuracy is computed from them) and a zero-argument call for the timing harness.

    torch         eager PyTorch (fp32), on cpu or cuda
    onnxruntime   ONNX Runtime on the member's ONNX export (fp32, int8 dynamic, int8-static
                  QDQ calibrated on training images); CPU, or CUDA where ORT has it

A new runtime is a class with this interface and one line of `learngene.core.registries.RUNTIMES`.
"""

from __future__ import annotations

import numpy as np
import torch

from learngene.core.errors import UserError


class Runner:
    """One member at one precision in one runtime."""

    file_sha256: str | None = None  # the file the runtime ran, where there is one
    model_mib: float = 0.0  # the weights the runtime holds: the file it loads, or the module's tensors

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def call(self, batch_size: int):
        """A zero-argument callable running one batch (what the harness times)."""
        raise NotImplementedError


class TorchRunner(Runner):
    def __init__(self, model: torch.nn.Module, img_size: int, device: torch.device):
        self.model, self.img, self.device = model.eval().to(device), img_size, device
        tensors = list(model.parameters()) + list(model.buffers())
        self.model_mib = sum(t.numel() * t.element_size() for t in tensors) / 2**20

    @torch.no_grad()
    def logits(self, x):
        return self.model(x.to(self.device)).float().cpu()

    def call(self, batch_size):
        x = torch.randn(batch_size, 3, self.img, self.img, device=self.device)
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)

        @torch.no_grad()
        def run():
            self.model(x)
            sync()

        return run


class OrtRunner(Runner):
    def __init__(self, session, img_size: int, file_sha256: str, file_bytes: int = 0):
        self.sess, self.img, self.file_sha256 = session, img_size, file_sha256
        self.input = session.get_inputs()[0].name
        self.model_mib = file_bytes / 2**20

    def logits(self, x):
        return torch.from_numpy(self.sess.run(None, {self.input: x.numpy().astype(np.float32)})[0])

    def call(self, batch_size):
        x = np.random.default_rng(0).standard_normal((batch_size, 3, self.img, self.img)).astype(np.float32)
        return lambda: self.sess.run(None, {self.input: x})


class TorchRuntime:
    name = "torch"
    precisions = ("fp32",)

    @property
    def version(self) -> str:
        return torch.__version__

    def runner(self, member, precision: str, device: torch.device, threads: int, calibration=None) -> Runner:
        return TorchRunner(member.model(), member.img_size, device)


class OnnxRuntime:
    name = "onnxruntime"
    precisions = ("fp32", "int8", "int8-static")

    @property
    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def runner(self, member, precision: str, device: torch.device, threads: int, calibration=None) -> Runner:
        import onnxruntime

        from learngene.onnx_cache import onnx_file
        from learngene.onnx_sessions import ort_session

        provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
        if provider not in onnxruntime.get_available_providers():
            raise UserError(f"--runtime onnxruntime --device {device}: this onnxruntime has no {provider}")
        images, key = calibration or (None, "")
        path, rec = onnx_file(member.model().cpu(), member.img_size, precision, images, key, name=member.id)
        return OrtRunner(
            ort_session(path, threads, providers=(provider,)), member.img_size, rec["sha256"], path.stat().st_size
        )


def plan(runtimes, precisions) -> list[tuple]:
    """The (runtime, precision) pairs to measure: every precision each runtime has of those
    asked; an unknown runtime or precision, or one no runtime asked for has, is refused."""
    from learngene.core.registries import RUNTIMES
    from learngene.onnx_cache import check_precisions

    names = [r.strip() for r in (runtimes.split(",") if isinstance(runtimes, str) else runtimes) if r.strip()]
    bad = [r for r in names if r not in RUNTIMES]
    if bad or not names:
        raise UserError(f"unknown --runtime {bad[0] if bad else '(none)'!r} (choose from {', '.join(RUNTIMES.names)})")
    precs = check_precisions(precisions)
    pairs = [(RUNTIMES[r](), p) for r in names for p in precs if p in RUNTIMES[r].precisions]
    for p in precs:
        if not any(p == q for _, q in pairs):
            raise UserError(
                f"--precision {p}: none of the runtimes {', '.join(names)} has it "
                f"(torch: fp32; onnxruntime: {', '.join(OnnxRuntime.precisions)})"
            )
    return pairs
