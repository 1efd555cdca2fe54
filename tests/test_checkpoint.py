import pytest
import torch

import pfnkit
from pfnkit.exceptions import CheckpointError
from pfnkit.model import PFNConfig
from pfnkit.priors import GPPrior
from pfnkit.train import FORMAT_VERSION, TrainConfig, Trainer, export_safetensors, save_checkpoint
from pfnkit.train.checkpoint import atomic_write


@pytest.fixture
def run(tmp_path, tiny_model_kwargs, tiny_train_kwargs):
    Trainer(
        GPPrior(),
        PFNConfig(**tiny_model_kwargs),
        TrainConfig(steps=2, **tiny_train_kwargs),
        tmp_path / "run",
    ).run()
    return tmp_path / "run"


def test_load_checkpoint_returns_eval_model_with_card(run):
    model = pfnkit.load_checkpoint(run)
    assert not model.training
    assert model.card["step"] == 2 and model.card["prior"]["name"] == "gp"
    assert "PFN" in repr(model)
    x, y = torch.rand(1, 10, 1), torch.randn(1, 6)
    assert model(x, y).shape == (1, 4, 50)


def test_safetensors_export_roundtrip(run, tmp_path):
    path = export_safetensors(run, tmp_path / "w.safetensors")
    a, b = pfnkit.load_checkpoint(run), pfnkit.load_checkpoint(path)
    x, y = torch.rand(2, 10, 1), torch.randn(2, 6)
    assert torch.equal(a(x, y), b(x, y))
    assert b.card["model_config"] == a.card["model_config"]


def test_newer_format_is_refused(run, tmp_path):
    data = torch.load(run / "checkpoint.pt", weights_only=True)
    data["format_version"] = FORMAT_VERSION + 1
    torch.save(data, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="Upgrade pfnkit"):
        pfnkit.load_checkpoint(tmp_path / "new.pt")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoint_is_a_clear_error(run, tmp_path, damage):
    raw = (run / "checkpoint.pt").read_bytes()
    bad = {"truncate": raw[: len(raw) // 2], "garbage": b"not a checkpoint" * 10, "empty": b""}[
        damage
    ]
    (tmp_path / "bad.pt").write_bytes(bad)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        pfnkit.load_checkpoint(tmp_path / "bad.pt")
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(bad)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        pfnkit.load_checkpoint(bad_st)


def test_not_a_checkpoint_and_missing(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a pfnkit checkpoint"):
        pfnkit.load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="No checkpoint"):
        pfnkit.load_checkpoint(tmp_path / "nowhere")


def test_failed_write_keeps_the_old_checkpoint(run):
    before = (run / "checkpoint.pt").read_bytes()

    def explode(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(run / "checkpoint.pt", explode)
    assert (run / "checkpoint.pt").read_bytes() == before
    assert not list(run.glob("*.tmp"))


def test_save_checkpoint_adds_versions(tmp_path):
    path = save_checkpoint(tmp_path, {"model_config": {}, "state_dict": {}, "step": 0})
    data = torch.load(path, weights_only=True)
    assert data["format_version"] == FORMAT_VERSION and data["pfnkit_version"] == pfnkit.__version__


def test_checkpoint_with_an_unknown_block_is_a_clear_error(run, tmp_path):
    data = torch.load(run / "checkpoint.pt", weights_only=True)
    data["model_config"]["ffn"] = "hyperffn"
    torch.save(data, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="Unknown FFN block 'hyperffn'.*Upgrade pfnkit"):
        pfnkit.load_checkpoint(tmp_path / "future.pt")


# ---------------------------------------------------------------- issue 12: malformed files


@pytest.mark.parametrize("version", ["1", 1.0, True, -1, 0, None])
def test_malformed_format_version_is_refused_as_malformed(run, tmp_path, version):
    data = torch.load(run / "checkpoint.pt", weights_only=True)
    data["format_version"] = version
    torch.save(data, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="malformed format_version") as e:
        pfnkit.load_checkpoint(tmp_path / "odd.pt")
    assert "Upgrade" not in str(e.value)


class _Evil:
    def __reduce__(self):
        import os

        return (os.getpid, ())


class _Custom:
    pass


@pytest.mark.parametrize("payload", [_Evil(), _Custom()])
def test_pickle_refused_by_weights_only_is_reported_as_unsafe(run, tmp_path, payload):
    data = torch.load(run / "checkpoint.pt", weights_only=True)
    data["extra"] = payload
    torch.save(data, tmp_path / "unsafe.pt")
    with pytest.raises(CheckpointError, match="refused for safety") as e:
        pfnkit.load_checkpoint(tmp_path / "unsafe.pt")
    assert "corrupt" not in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "key, value",
    [
        ("model_config", [1, 2]),
        ("metrics", "fast"),
        ("train_config", 3),
        ("prior", ["gp"]),
        ("state_dict", {"w": 1}),
        ("step", "3"),
    ],
)
def test_fields_of_the_wrong_type_are_refused(run, tmp_path, key, value):
    data = torch.load(run / "checkpoint.pt", weights_only=True)
    data[key] = value
    torch.save(data, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=f"'{key}'"):
        pfnkit.load_checkpoint(tmp_path / "odd.pt")


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 2368 vs 2256"),
        OSError(28, "No space left on device"),
    ],
)
def test_disk_full_while_saving_is_a_clear_error(run, monkeypatch, failure):
    import pfnkit.train.checkpoint as ckpt

    before = (run / "checkpoint.pt").read_bytes()

    def full(data, f):
        f.write(b"partial")
        raise failure

    monkeypatch.setattr(ckpt.torch, "save", full)
    with pytest.raises(CheckpointError, match="last good checkpoint") as e:
        save_checkpoint(run, {"model_config": {}, "state_dict": {}, "step": 3})
    assert "disk" in str(e.value) and "\n" not in str(e.value)
    assert (run / "checkpoint.pt").read_bytes() == before
    assert not list(run.glob("*.tmp"))


def test_stale_temporaries_are_removed_when_a_run_resumes(run):
    stale = [run / ".checkpoint.pt.abc123.tmp", run / ".metrics.jsonl.x9.tmp"]
    for p in stale:
        p.write_bytes(b"left by a kill -9 during a save")
    other = run / "notes.tmp"
    other.write_text("mine")
    Trainer.resume(run, steps=3).run()
    assert not any(p.exists() for p in stale) and other.exists()
