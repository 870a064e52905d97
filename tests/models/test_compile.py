"""``--compile``: a compiled forward gives the eager numbers; a missing toolchain is one clear line."""
from __future__ import annotations

import copy

import pytest
import torch

from cncnn_cli.errors import CncnnError
from cncnn_cli.models import build_model
from cncnn_cli.models.compile import compile_model, require_toolchain
from tests.helpers.configs import tiny_model_config

CPU = torch.device("cpu")
#: Inductor builds C++ (tens of seconds on a small machine); aot_eager traces the same graphs,
#: forward and backward, without generating code.
TEST_BACKEND = "aot_eager"


@pytest.mark.parametrize("impl", ["auto", "phase"])
def test_compiled_forward_equals_eager_values_and_gradients(impl):
    torch.manual_seed(0)
    eager = build_model(dict(tiny_model_config(), fusion=dict(type="convlstm", channels=32, impl=impl))).double()
    compiled = compile_model(copy.deepcopy(eager), CPU, backend=TEST_BACKEND)
    images, labels = torch.randn(2, 3, 64, 64, dtype=torch.float64), torch.tensor([0, 3])
    losses = [sum(model(images, labels, mode="loss").values()) for model in (eager, compiled)]
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-9, atol=1e-11)
    for loss in losses:
        loss.backward()
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-9, atol=1e-11, msg=name)
    eager.eval(), compiled.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(images)["logits"], eager(images)["logits"], rtol=1e-9, atol=1e-11)


def test_a_missing_cpu_compiler_is_named_before_anything_compiles(monkeypatch):
    import torch._inductor.config as inductor_config

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/g++",))
    with pytest.raises(CncnnError, match=r"^--compile on CPU needs a C\+\+ compiler: install g\+\+"):
        require_toolchain(CPU)


def test_missing_triton_is_named_for_cuda(monkeypatch):
    import torch.utils._triton

    monkeypatch.setattr(torch.utils._triton, "has_triton", lambda: False)
    with pytest.raises(CncnnError, match="needs Triton: pip install triton"):
        require_toolchain(torch.device("cuda"))


def test_a_missing_c_compiler_for_triton_is_named_for_cuda(monkeypatch):
    """Triton builds a C launcher at its first kernel: without gcc, clang or $CC that fails mid-run."""
    import torch.utils._triton

    from cncnn_cli.models import compile as compile_module

    monkeypatch.setattr(torch.utils._triton, "has_triton", lambda: True)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(compile_module.shutil, "which", lambda name: None)
    with pytest.raises(CncnnError, match=r"^--compile on CUDA needs a C compiler: install gcc .* for Triton's launcher"):
        require_toolchain(torch.device("cuda"))
    monkeypatch.setenv("CC", "/usr/bin/cc")
    require_toolchain(torch.device("cuda"))


def test_predict_mode_keeps_its_per_image_split_out_of_the_compiled_graph():
    """Compiling the pipeline, not the mode dispatch: a new batch size does not mean a graph per size."""
    counts = []

    def counting_backend(graph, example_inputs):
        counts.append(len(example_inputs))
        return graph.forward

    torch._dynamo.reset()
    model = compile_model(build_model(tiny_model_config()).eval(), CPU, backend=counting_backend)
    with torch.no_grad():
        for batch in (4, 3, 2, 5):
            results = model(torch.randn(batch, 3, 64, 64), torch.arange(batch), mode="predict")
            assert [r["label"] for r in results] == list(range(batch))
    assert len(counts) <= 2  # the first size, then one graph with a dynamic batch


def test_a_backend_failure_at_the_first_call_is_one_line():
    def broken_backend(graph, example_inputs):
        raise RuntimeError("g++: command not found\nmore detail")

    model = compile_model(torch.nn.Linear(3, 2), CPU, backend=broken_backend)
    with pytest.raises(CncnnError) as caught:
        model(torch.randn(1, 3))
    message = str(caught.value)
    assert "\n" not in message and "RuntimeError: g++: command not found" in message
    assert "drop --compile" in message and caught.value.exit_code == 1
