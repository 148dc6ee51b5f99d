"""Export formats round-trip, ONNX equals PyTorch, the CLI exports, and bad files fail with one line."""

import json

import onnxruntime
import pytest
import torch

from dnarch.cli import main
from dnarch.cost import model_cost
from dnarch.export import export_run, export_state, harden, load_static, save_static
from dnarch.export.static import ExportError
from dnarch.export.summary import before_after
from tests.conftest import shrunk_model, stream_narrows


def _narrowing(shape: tuple[int, ...]):
    """A network with a residual width per stage whose stream narrows somewhere."""
    for seed in range(20):
        m = shrunk_model(shape, seed, widen=2.0, stage_widths=True)
        if stream_narrows(m):
            return m.eval()
    raise AssertionError("no seed narrows")


@pytest.fixture(
    params=[(40,), (12, 9), "narrowing", "mix"], ids=["1d", "2d", "1d-stage-widths", "1d-mix"]
)
def saved(request, tmp_path):
    if request.param == "narrowing":
        m = _narrowing((40,))
    elif request.param == "mix":  # halvings that mix channels (net.downsample=strided-mix)
        m = shrunk_model((40,), 2, widen=4.0, downsample="strided-mix")
        assert any(b.mixed for b in harden(m).blocks)
    else:
        m = shrunk_model(request.param, 2)
    spec = harden(m)
    save_static(tmp_path, spec, export_state(m, spec))
    return m, tmp_path


def test_pt2_round_trip_with_any_batch(saved) -> None:
    m, folder = saved
    path = export_run(folder, "pt2")
    program = torch.export.load(path)
    x = torch.randn(7, m.in_channels, *m.input_shape)
    with torch.no_grad():
        want = m(x)
    got = program.module()(x)
    assert ((got - want).abs().max() / want.abs().max()) < 1e-4


def test_onnx_equals_pytorch(saved) -> None:
    m, folder = saved
    path = export_run(folder, "onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(4, m.in_channels, *m.input_shape)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = m(x).numpy()
    assert abs(got - want).max() / abs(want).max() < 1e-4


def test_static_model_loads_without_training_code(saved) -> None:
    _, folder = saved
    state = torch.load(folder / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    spec = json.loads((folder / "architecture.json").read_text())
    assert spec["residual_width"] == state["stem.weight"].shape[0]


def test_before_after_counts_real_modules() -> None:
    m = shrunk_model((12, 9), 1)
    numbers = before_after(m)
    assert numbers["macs_counted"] == numbers["macs_estimate"]
    assert numbers["params_counted"] == numbers["params_estimate"]
    assert (
        numbers["max_macs_counted"]
        == numbers["max_macs_estimate"]
        == int(model_cost(m, "max").macs)
    )
    assert numbers["max_params_counted"] == numbers["max_params_estimate"]
    assert numbers["macs_counted"] < numbers["max_macs_counted"]


def test_mismatched_and_corrupted_files_fail_with_one_line(saved, tmp_path_factory) -> None:
    m, folder = saved
    other = tmp_path_factory.mktemp("other")
    m2 = shrunk_model(m.input_shape, 5)
    save_static(other, harden(m2), export_state(m2, harden(m2)))
    (folder / "model.pt").write_bytes((other / "model.pt").read_bytes())
    with pytest.raises(ExportError, match="does not match"):
        load_static(folder)
    (folder / "architecture.json").write_text("{not json")
    with pytest.raises(ExportError, match="not a valid architecture"):
        load_static(folder)
    with pytest.raises(ExportError, match="unknown export format"):
        export_run(other, "tflite")


def test_cli_export(saved, capsys) -> None:
    _, folder = saved
    assert main(["export", str(folder), "--format", "onnx"]) == 0
    assert (folder / "model.onnx").is_file()
    assert main(["export", str(folder), "--format", "pt2", "--out", str(folder / "x.pt2")]) == 0
    assert (folder / "x.pt2").is_file()
    capsys.readouterr()
    assert main(["export", str(folder / "nope"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dnarch: error:")


def test_recompute_bn_stats_is_the_exact_average() -> None:
    from dnarch.train.finetune import recompute_bn_stats

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 1), torch.nn.BatchNorm1d(3))
    x = torch.randn(50, 2, 7)
    recompute_bn_stats(net, x, batch=64)  # one batch: the statistics are that batch's
    with torch.no_grad():
        h = net[0](x)
    assert torch.allclose(net[1].running_mean, h.mean(dim=(0, 2)), atol=1e-6)
    assert torch.allclose(net[1].running_var, h.var(dim=(0, 2), unbiased=True), atol=1e-5)
    assert not net.training and net[1].momentum == 0.1


def test_cli_finetune(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    quick = ["--epochs", "1", "--data.limit_train=128", "--data.limit_test=64", "--net.blocks=2",
             "--net.backend=direct", "--quiet"]  # fmt: skip
    assert main(["train", "--out", str(out), *quick]) == 0
    capsys.readouterr()
    assert main(["finetune", str(out), "--epochs", "1", "--quiet"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    result = json.loads((out / "finetuned" / "finetune.json").read_text())
    assert [h["epoch"] for h in result["history"]] == [0, 1]
    tuned = load_static(out / "finetuned")
    assert tuned(torch.randn(2, 1, 40)).shape == (2, 10)
    assert main(["finetune", str(out), "--epochs", "x"]) == 2
    assert main(["finetune", str(tmp_path / "nope")]) == 2
    # --retrain: the same architecture from a fresh start, for the run's epochs by default
    assert main(["finetune", str(out), "--retrain", "--quiet"]) == 0
    assert "retrained from scratch for 1 epochs" in capsys.readouterr().out
    redone = json.loads((out / "retrained" / "finetune.json").read_text())
    assert redone["retrained"] and redone["epochs"] == 1 and redone["lr"] == 3e-3
    exported, retrained = load_static(out), load_static(out / "retrained")
    assert retrained.spec == exported.spec
    assert not torch.equal(retrained.head.weight, exported.head.weight)
    assert main(["finetune", str(out), "--retrain", "--epochs", "0"]) == 2


def test_retrain_starts_from_a_fresh_initialisation_of_the_same_architecture(saved) -> None:
    """Two retrainings with one seed end at the same network whatever the weights they are handed
    (within 0.02: two steps of AdamW can differ by its step size where a gradient's rounding flips
    its sign; weights that started from the noise handed in would differ by ~1); the network given
    is left as it was."""
    from dnarch.data.base import from_arrays
    from dnarch.train.finetune import retrain

    m, folder = saved
    net = load_static(folder)
    shape = (m.in_channels, *m.input_shape)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, *shape, generator=g), torch.randint(0, m.num_classes, (96,), generator=g)
    data = from_arrays(x[:64], y[:64], x[64:], y[64:], num_classes=m.num_classes)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    a, _ = retrain(net.spec, data, 1, batch_size=32, progress=False)
    b, _ = retrain(load_static_like(net).spec, data, 1, batch_size=32, progress=False)
    assert a.spec == net.spec
    assert all(torch.allclose(a.state_dict()[k], b.state_dict()[k], atol=0.02) for k in before)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    assert any(not torch.allclose(a.state_dict()[k], v, atol=0.1) for k, v in before.items())


def load_static_like(net):  # type: ignore[no-untyped-def]
    """The same architecture with every parameter overwritten by noise."""
    from dnarch.export.static import StaticNet

    other = StaticNet(net.spec)
    with torch.no_grad():
        for p in other.parameters():
            p.normal_()
    return other


def test_a_successful_export_is_quiet(saved, capfd) -> None:
    _, folder = saved
    capfd.readouterr()
    for fmt in ("pt2", "onnx"):
        assert main(["export", str(folder), "--format", fmt]) == 0
        out, err = capfd.readouterr()
        assert err == "" and out.strip() == f"exported ({fmt}): {folder / f'model.{fmt}'}"
    assert not [p.name for p in folder.iterdir() if "tmp" in p.name]
