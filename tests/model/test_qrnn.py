"""QRNN: the forget_mult recurrence, its backend dispatch, the QRNN module and --arMode QRNN."""
import ctypes
import importlib
import shutil
import subprocess
import sys
import types
import warnings

import pytest
import torch

from cpc.model import build_model
from cpc.options import complete_with_defaults
from cpc.qrnn import QRNN, QRNNLayer, forget_mult

fm_module = importlib.import_module("cpc.qrnn.forget_mult")  # the package attribute is the function


def loop_reference(f, z, h0=None):
    """h_t = f_t h_{t-1} + (1 - f_t) z_t, one autograd-recorded step at a time."""
    h = torch.zeros_like(f[0]) if h0 is None else h0
    steps = []
    for f_t, z_t in zip(f, z):
        h = f_t * h + (1 - f_t) * z_t
        steps.append(h)
    return torch.stack(steps)


def reference_layer(layer: QRNNLayer, x, c0=None, forget=lambda f: f):
    """The QRNN equations in float64, step by step, with ``layer``'s weights."""
    weight, bias = layer.linear.weight.double(), layer.linear.bias.double()
    x = x.double()
    size = layer.hidden_size
    c = torch.zeros(x.shape[1], size, dtype=torch.float64) if c0 is None else c0.double()
    previous_x = torch.zeros_like(x[0])
    outputs = []
    for x_t in x:
        source = x_t if layer.window == 1 else torch.cat([previous_x, x_t], -1)
        gates = source @ weight.T + bias
        z, f = torch.tanh(gates[:, :size]), forget(torch.sigmoid(gates[:, size:2 * size]))
        c = f * c + (1 - f) * z
        outputs.append(torch.sigmoid(gates[:, 2 * size:]) * c if layer.output_gate else c)
        previous_x = x_t
    return torch.stack(outputs), c


def gates_and_values(T=7, B=3, H=5, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    f = torch.rand(T, B, H, generator=generator, dtype=dtype).requires_grad_()
    z = torch.randn(T, B, H, generator=generator, dtype=dtype).requires_grad_()
    h0 = torch.randn(B, H, generator=generator, dtype=dtype).requires_grad_()
    return f, z, h0


# --------------------------------------------------------------------------- forget_mult

@pytest.mark.parametrize("with_h0", [False, True])
def test_forget_mult_matches_float64_loop(with_h0):
    f, z, h0 = gates_and_values(T=40, B=4, H=6)
    h0_arg = h0 if with_h0 else None
    out = forget_mult(f, z, h0_arg)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, [f, z, h0] if with_h0 else [f, z], grad_out)

    f64, z64 = f.detach().double().requires_grad_(), z.detach().double().requires_grad_()
    h64 = h0.detach().double().requires_grad_() if with_h0 else None
    ref = loop_reference(f64, z64, h64)
    ref_grads = torch.autograd.grad(ref, [f64, z64, h64] if with_h0 else [f64, z64], grad_out.double())

    assert out.shape == (40, 4, 6) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    for grad, ref_grad in zip(grads, ref_grads):
        torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-5, atol=1e-6)


def test_forget_mult_gradcheck_float64():
    f, z, h0 = gates_and_values(T=5, B=2, H=3, dtype=torch.float64)
    assert torch.autograd.gradcheck(forget_mult, (f, z, h0))
    assert torch.autograd.gradcheck(lambda f, z: forget_mult(f, z), (f, z))


def test_forget_mult_accepts_strided_gates_and_checks_shapes():
    gates = torch.rand(6, 2, 8, requires_grad=True)
    f, z = gates.split(4, dim=-1)  # non-contiguous views, as inside a QRNN layer
    out = forget_mult(f, z)
    torch.testing.assert_close(out, loop_reference(f, z))
    out.sum().backward()
    assert gates.grad is not None and torch.isfinite(gates.grad).all()
    with pytest.raises(ValueError, match="h0"):
        forget_mult(f, z, torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"\(T, B, H\)"):
        forget_mult(f[0], z[0])


# --------------------------------------------------------------------------- backend dispatch

class FakeBackend:
    """A fast backend for CPU tensors that runs torch's maths, or raises where told to."""

    name = "fake"

    def __init__(self, fail_forward=False, fail_backward=False):
        self.failed = False
        self.fail_forward, self.fail_backward = fail_forward, fail_backward
        self.calls = []

    def supports(self, x):
        return True

    def forward(self, f, z, h0):
        self.calls.append("forward")
        if self.fail_forward:
            raise RuntimeError("kernel exploded")
        return fm_module.recurrence_forward(f, z, h0)

    def backward(self, f, z, h0, h, grad_h):
        self.calls.append("backward")
        if self.fail_backward:
            raise RuntimeError("kernel exploded")
        return fm_module.recurrence_backward(f, z, h0, h, grad_h)


def run_with_grads(*inputs):
    out = forget_mult(*inputs)
    return (out, *torch.autograd.grad(out.square().sum(), inputs))


def test_torch_backend_on_cpu_and_cupy_never_claims_cpu_tensors():
    x = torch.zeros(2, 2, 2)
    assert fm_module.select_backend(x) is fm_module.TORCH_BACKEND
    assert not fm_module.CupyBackend().supports(x)


@pytest.mark.parametrize("fail_forward,fail_backward", [(False, False), (True, False), (False, True)])
def test_fast_backend_used_or_silently_replaced(monkeypatch, fail_forward, fail_backward):
    inputs = gates_and_values()
    expected = run_with_grads(*inputs)
    fake = FakeBackend(fail_forward, fail_backward)
    monkeypatch.setattr(fm_module, "FAST_BACKENDS", [fake])
    assert fm_module.select_backend(inputs[0]) is fake
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = run_with_grads(*inputs)
    for value, reference in zip(got, expected):
        torch.testing.assert_close(value, reference, rtol=0, atol=0)
    assert fake.calls == (["forward"] if fail_forward else ["forward", "backward"])
    assert fake.failed == (fail_forward or fail_backward)
    expected_next = fm_module.TORCH_BACKEND if fake.failed else fake
    assert fm_module.select_backend(inputs[0]) is expected_next


def test_cupy_unavailable_when_import_fails_or_no_gpu_says_why(monkeypatch):
    fm_module._cupy_or_reason.cache_clear()
    monkeypatch.setitem(sys.modules, "cupy", None)  # "import cupy" raises ImportError
    assert fm_module._cupy_or_reason() == (None, "cupy is not installed: pip install '.[cuda]'")
    fm_module._cupy_or_reason.cache_clear()
    no_gpu = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: False))
    monkeypatch.setitem(sys.modules, "cupy", no_gpu)
    assert fm_module._cupy() is None and fm_module._cupy_or_reason()[1] == "cupy sees no GPU"
    fm_module._cupy_or_reason.cache_clear()


def test_the_backend_in_use_is_printed_once_per_process(monkeypatch, capsys):
    monkeypatch.setattr(fm_module, "_announced", set())
    f, z, h0 = gates_and_values(T=4, B=2, H=3, dtype=torch.float32)
    for _ in range(3):
        fm_module.forget_mult(f, z, h0)
    assert capsys.readouterr().out == "QRNN recurrence: torch on cpu\n"


CPU_SHIM = """
struct Dim3 { long long x, y, z; };
static Dim3 blockIdx, blockDim, threadIdx;
#define __global__
extern "C" void set_thread(long long block, long long threads, long long thread) {
    blockIdx.x = block; blockDim.x = threads; threadIdx.x = thread;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ to build the kernels for the CPU")
@pytest.mark.parametrize("dtype,scalar_type", [(torch.float32, "float"), (torch.float64, "double")])
def test_cuda_kernel_source_computes_the_torch_recurrence(tmp_path, dtype, scalar_type):
    """No GPU here: compile the CUDA kernels as C++ and run every (block, thread) in turn."""
    source = tmp_path / "kernels.cpp"
    source.write_text(CPU_SHIM + fm_module._CUDA_SOURCE.replace("scalar_t", scalar_type))
    subprocess.run(["g++", "-O1", "-shared", "-fPIC", str(source), "-o", str(tmp_path / "k.so")],
                   check=True)
    lib = ctypes.CDLL(str(tmp_path / "k.so"))
    f, z, h0 = (t.detach() for t in gates_and_values(T=6, B=3, H=5, dtype=dtype))
    grad_h = torch.randn_like(f)
    h, grad_f, grad_z, grad_h0 = (torch.full_like(t, float("nan")) for t in (f, f, f, h0))
    width, threads = h0.numel(), 4  # 15 elements: the last block is partly idle

    def launch(kernel, *tensors):
        for block in range(-(-width // threads)):
            for thread in range(threads):
                lib.set_thread(ctypes.c_longlong(block), ctypes.c_longlong(threads),
                               ctypes.c_longlong(thread))
                kernel(*(ctypes.c_void_p(t.data_ptr()) for t in tensors),
                       ctypes.c_longlong(f.shape[0]), ctypes.c_longlong(width))

    launch(lib.forget_mult_forward, f, z, h0, h)
    launch(lib.forget_mult_backward, f, z, h0, h, grad_h, grad_f, grad_z, grad_h0)
    expected_h = fm_module.recurrence_forward(f, z, h0)
    torch.testing.assert_close(h, expected_h)
    for got, expected in zip((grad_f, grad_z, grad_h0),
                             fm_module.recurrence_backward(f, z, h0, expected_h, grad_h)):
        torch.testing.assert_close(got, expected)


# --------------------------------------------------------------------------- QRNN module

@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("output_gate", [True, False])
def test_qrnn_shapes(batch_first, num_layers, window, output_gate):
    T, B = 6, 3
    qrnn = QRNN(4, 5, num_layers=num_layers, window=window, output_gate=output_gate,
                batch_first=batch_first)
    x = torch.randn(B, T, 4) if batch_first else torch.randn(T, B, 4)
    output, h_n = qrnn(x)
    assert output.shape == ((B, T, 5) if batch_first else (T, B, 5))
    assert h_n.shape == (num_layers, B, 5)
    assert qrnn.layers[0].linear.in_features == window * 4
    assert qrnn.layers[-1].linear.out_features == (3 if output_gate else 2) * 5
    output2, _ = qrnn(x, torch.randn(num_layers, B, 5))
    assert not torch.allclose(output, output2)  # the initial state is used


@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("output_gate", [True, False])
def test_layer_matches_equations(window, output_gate):
    layer = QRNNLayer(4, 6, window=window, output_gate=output_gate)
    x, c0 = torch.randn(9, 2, 4), torch.randn(2, 6)
    for hidden in (None, c0):
        h, c_last = layer(x, hidden)
        ref_h, ref_c = reference_layer(layer, x, hidden)
        torch.testing.assert_close(h.double(), ref_h, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(c_last.double(), ref_c, rtol=1e-5, atol=1e-6)


def test_stack_matches_equations_batch_first_and_h_n_continues_the_sequence():
    qrnn = QRNN(3, 5, num_layers=2, window=1, batch_first=True)
    x, hidden = torch.randn(2, 10, 3), torch.randn(2, 2, 5)
    output, h_n = qrnn(x, hidden)
    layer_input, states = x.transpose(0, 1), []
    for layer, c0 in zip(qrnn.layers, hidden):
        layer_input, c_last = reference_layer(layer, layer_input, c0)
        states.append(c_last)
    torch.testing.assert_close(output.double(), layer_input.transpose(0, 1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_n.double(), torch.stack(states), rtol=1e-5, atol=1e-6)
    first, h_mid = qrnn(x[:, :4], hidden)
    second, h_end = qrnn(x[:, 4:], h_mid)
    torch.testing.assert_close(torch.cat([first, second], 1), output)
    torch.testing.assert_close(h_end, h_n)


def test_zoneout_random_in_training_expectation_in_eval():
    layer = QRNNLayer(4, 8, output_gate=False, zoneout=0.5)
    x, c0 = torch.randn(30, 4, 4), torch.randn(4, 8)
    layer.train()
    torch.manual_seed(0)
    h1, _ = layer(x, c0)
    h2, _ = layer(x, c0)
    assert not torch.equal(h1, h2)
    kept = (h1[1:] == h1[:-1]).float().mean().item()  # zoned-out elements keep c_{t-1} exactly
    assert 0.35 < kept < 0.65
    layer.zoneout = 1.0
    torch.testing.assert_close(layer(x, c0)[0], c0.expand(30, 4, 8), rtol=0, atol=0)
    layer.zoneout = 0.5
    layer.eval()
    h_eval, _ = layer(x, c0)
    torch.testing.assert_close(layer(x, c0)[0], h_eval, rtol=0, atol=0)
    ref_h, _ = reference_layer(layer, x, c0, forget=lambda f: 1 - (1 - f) * 0.5)
    torch.testing.assert_close(h_eval.double(), ref_h, rtol=1e-5, atol=1e-6)


def test_dropout_between_layers_only_in_training():
    x = torch.randn(8, 3, 4)
    single = QRNN(4, 6, num_layers=1, dropout=0.9).train()
    torch.testing.assert_close(single(x)[0], single.eval()(x)[0], rtol=0, atol=0)

    stack = QRNN(4, 6, num_layers=2, dropout=0.5)
    stack.eval()
    eval_outputs, _ = stack.forward_all_layers(x)
    torch.testing.assert_close(stack(x)[0], eval_outputs[1], rtol=0, atol=0)
    stack.train()
    train_outputs, _ = stack.forward_all_layers(x)
    torch.testing.assert_close(train_outputs[0], eval_outputs[0], rtol=0, atol=0)
    assert not torch.allclose(train_outputs[1], eval_outputs[1])
    assert not torch.allclose(stack(x)[0], train_outputs[1])


def test_gradient_reaches_every_parameter_input_and_state():
    qrnn = QRNN(4, 5, num_layers=2, window=2, zoneout=0.2, dropout=0.1).train()
    x = torch.randn(7, 3, 4, requires_grad=True)
    hidden = torch.randn(2, 3, 5, requires_grad=True)
    output, h_n = qrnn(x, hidden)
    (output.sum() + h_n.sum()).backward()
    for tensor in [x, hidden, *qrnn.parameters()]:
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
        assert tensor.grad.abs().sum() > 0


def test_invalid_arguments():
    with pytest.raises(ValueError, match="window"):
        QRNN(4, 5, window=3)
    with pytest.raises(ValueError, match="zoneout"):
        QRNN(4, 5, zoneout=1.5)
    with pytest.raises(ValueError, match="num_layers"):
        QRNN(4, 5, num_layers=0)


# --------------------------------------------------------------------------- --arMode QRNN

@pytest.mark.parametrize("n_levels", [1, 2])
@pytest.mark.parametrize("cpc_mode", [None, "reverse"])
def test_build_model_qrnn_context_shapes(n_levels, cpc_mode):
    args = complete_with_defaults(dict(hiddenEncoder=16, hiddenGar=12, nLevelsGRU=n_levels, arMode="QRNN",
                                       normMode="layerNorm", encoder_type="cpc", sizeWindow=20480,
                                       abspos=False, cpc_mode=cpc_mode))
    model = build_model(args)
    assert model.dim_context == 12 and len(model.gAR.baseNet.layers) == n_levels
    c, z, _ = model(torch.randn(2, 1, 1700), None)
    assert c.shape == (2, 10, 12) and z.shape == (2, 10, 16)
    layers = model.gAR(z, return_all_layers=True)
    assert len(layers) == n_levels and all(layer.shape == (2, 10, 12) for layer in layers)
    torch.testing.assert_close(layers[-1], c)
    c.sum().backward()
    assert all(p.grad is not None for p in model.gAR.parameters())
