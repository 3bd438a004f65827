"""Checkpoint forms, official backbone checkpoints, pretrained resolution and every error."""
from __future__ import annotations

import os
import pickle

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from twins_deploy import CheckpointError, WeightsUnavailableError, create_model, load_weights
from twins_deploy import weights as weights_module

from conftest import timm_reference

X = torch.randn(1, 3, 96, 128)


@pytest.fixture(scope="module")
def svt_ref():
    return timm_reference("svt_s")


@pytest.fixture(scope="module")
def ref_logits(svt_ref):
    with torch.no_grad():
        return svt_ref(X)


def _save(obj, path):
    if str(path).endswith(".safetensors"):
        save_file(obj, str(path))
    else:
        torch.save(obj, str(path))
    return path


@pytest.mark.parametrize("form", [
    "bare.safetensors", "bare.pth", "bare.pt", "bare.bin", "model", "state_dict",
    "state_dict_ema", "model_ema", "module_prefix", "nested",
])
def test_checkpoint_forms_load_and_reproduce_logits(tmp_path, svt_ref, ref_logits, form):
    sd = {k: v.clone() for k, v in svt_ref.state_dict().items()}
    if form.startswith("bare"):
        path = _save(sd, tmp_path / form)
    elif form == "module_prefix":
        path = _save({"model": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "m.pth")
    elif form == "nested":
        path = _save({"state_dict": {"model": sd}, "epoch": 3}, tmp_path / "n.pth")
    else:
        extra = {"epoch": 300, "args": {"lr": 1e-3}}
        path = _save({form: sd, **extra}, tmp_path / f"{form}.pth")
    model = create_model("svt_s", weights=path)
    with torch.no_grad():
        assert (model(X) - ref_logits).abs().max().item() <= 1e-5
    assert model.weights_info.source == "file"
    assert model.weights_info.sha256 == weights_module.file_sha256(path)


def test_plain_weights_preferred_over_ema(tmp_path, svt_ref, ref_logits):
    sd = svt_ref.state_dict()
    ema = {k: v + 1.0 for k, v in sd.items()}
    path = _save({"model_ema": ema, "model": sd}, tmp_path / "both.pth")
    with torch.no_grad():
        assert (create_model("svt_s", weights=path)(X) - ref_logits).abs().max() <= 1e-5


def _official_backbone_reference(ref, norms, x):
    """The official det/seg ALTGVT forward (norm_list applied and passed on), from timm's parts."""
    outs = []
    for k, (embed, blocks, peg) in enumerate(zip(ref.patch_embeds, ref.blocks, ref.pos_block)):
        x, size = embed(x)
        for j, blk in enumerate(blocks):
            x = blk(x, size)
            if j == 0:
                x = peg(x, size)
        w, b = norms[k]
        x = F.layer_norm(x, (x.shape[-1],), w, b, eps=1e-6)
        x = x.reshape(x.shape[0], *size, -1).permute(0, 3, 1, 2)
        outs.append(x)
    return outs


def test_official_svt_backbone_checkpoint_loads_with_stage_norms(tmp_path, svt_ref):
    gen = torch.Generator().manual_seed(5)
    norms = [(1 + 0.1 * torch.randn(d, generator=gen), 0.05 * torch.randn(d, generator=gen))
             for d in (64, 128, 256, 512)]
    sd = {f"backbone.{k}": v for k, v in svt_ref.state_dict().items()}
    for i, (w, b) in enumerate(norms):
        sd[f"backbone.norm_list.{i}.weight"], sd[f"backbone.norm_list.{i}.bias"] = w, b
    sd["neck.lateral_convs.0.conv.weight"] = torch.zeros(256, 64, 1, 1)  # mmdet neck, ignored
    path = _save({"meta": {"mmdet_version": "2.x"}, "state_dict": sd}, tmp_path / "det.pth")

    model = create_model("svt_s", weights=path, features=True)
    assert model.norm_list is not None
    x = torch.randn(1, 3, 230, 301)
    with torch.no_grad():
        got = model(x)
        want = _official_backbone_reference(svt_ref, norms, x)
    for g, w in zip(got, want):
        assert (g - w).abs().max().item() <= 1e-4 * max(1.0, w.abs().max().item())

    with pytest.raises(CheckpointError, match="features=True"):
        create_model("svt_s", weights=path)


def test_pcpvt_backbone_checkpoint_without_stage_norms(tmp_path):
    ref = timm_reference("pcpvt_s")
    path = _save({"state_dict": {f"backbone.{k}": v for k, v in ref.state_dict().items()}},
                 tmp_path / "pcpvt_det.pth")
    model = create_model("pcpvt_s", weights=path, features=True)
    assert model.norm_list is None
    with torch.no_grad():
        got = model(X)
        want = ref.forward_intermediates(X, intermediates_only=True)
    assert all((g - w).abs().max() <= 1e-4 for g, w in zip(got, want))


def test_timm_checkpoint_into_backbone_mode_ignores_head(tmp_path, svt_ref):
    path = _save(svt_ref.state_dict(), tmp_path / "w.safetensors")
    model = create_model("svt_s", weights=path, features=True)
    with torch.no_grad():
        got, want = model(X), svt_ref.forward_intermediates(X, intermediates_only=True)
    assert all((g - w).abs().max() <= 1e-4 for g, w in zip(got, want))


def test_num_classes_mismatch_needs_explicit_reset(tmp_path, svt_ref):
    path = _save(svt_ref.state_dict(), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="1000-class head.*10 classes.*reset_head"):
        create_model("svt_s", weights=path, num_classes=10)
    model = create_model("svt_s", weights=path, num_classes=10, reset_head=True)
    assert model.head.weight.shape == (10, 512)
    with torch.no_grad():
        assert (model.forward_features(X) - svt_ref.forward_features(X)).abs().max() <= 1e-5


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path, svt_ref):
    sd = dict(svt_ref.state_dict())
    del sd["blocks.2.3.attn.q.weight"]
    sd["blocks.9.0.extra"] = torch.zeros(1)
    sd["norm.weight"] = torch.zeros(7)
    path = _save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as e:
        create_model("svt_s", weights=path)
    msg = str(e.value)
    assert "missing keys: blocks.2.3.attn.q.weight" in msg
    assert "unexpected keys: blocks.9.0.extra" in msg
    assert "mis-shaped keys: norm.weight (7,) vs model (512,)" in msg


def test_wrong_variant_is_identified(tmp_path):
    path = _save(create_model("pcpvt_s").state_dict(), tmp_path / "pcpvt.safetensors")
    with pytest.raises(CheckpointError,
                       match=r"does not fit svt_s: the checkpoint looks like pcpvt_s \(pass --model pcpvt_s\); "):
        create_model("svt_s", weights=path)


def test_unreadable_and_non_checkpoint_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        create_model("svt_s", weights=tmp_path / "nope.pth")
    text = tmp_path / "notes.pth"
    text.write_text("definitely not a checkpoint\n")
    with pytest.raises(CheckpointError, match=r"not a checkpoint: neither a torch file \(zip archive or pickle\) nor safetensors"):
        create_model("svt_s", weights=text)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        create_model("svt_s", weights=broken)
    damaged = tmp_path / "damaged.safetensors"  # a safetensors header whose JSON is cut short
    damaged.write_bytes((64).to_bytes(8, "little") + b'{"head.weight": {"dtype": "F32", "sha' + b"\x00" * 80)
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint"):
        create_model("svt_s", weights=damaged)
    empty = _save({}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="no state dict"):
        create_model("svt_s", weights=empty)
    notensors = _save({"epoch": 3, "args": {"lr": 0.1}}, tmp_path / "meta.pth")
    with pytest.raises(CheckpointError, match="no tensors"):
        create_model("svt_s", weights=notensors)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": _Exploit()}, f)
    with pytest.raises(CheckpointError, match="refused by the safe loader"):
        create_model("svt_s", weights=path)


def test_pretrained_resolves_timm_hub_id(tmp_path, monkeypatch, svt_ref, ref_logits):
    path = _save(svt_ref.state_dict(), tmp_path / "model.safetensors")
    asked = []

    def fake_download(repo_id, filename, **kw):
        asked.append((repo_id, filename))
        return str(path)

    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    model = create_model("twins_svt_small", pretrained=True)
    assert asked == [("timm/twins_svt_small.in1k", "model.safetensors")]
    assert model.weights_info.source == "pretrained"
    with torch.no_grad():
        assert (model(X) - ref_logits).abs().max() <= 1e-5
    create_model("svt_s", weights="timm/twins_svt_small.in1k")
    assert asked[-1][0] == "timm/twins_svt_small.in1k"


def test_pretrained_offline_fails_clearly(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsUnavailableError, match="timm/twins_svt_small.in1k.*--weights"):
        create_model("svt_s", pretrained=True)


def test_nothing_downloads_unasked(monkeypatch):
    import huggingface_hub

    def boom(*a, **k):
        raise AssertionError("download attempted")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", boom)
    create_model("svt_s")
    create_model("pcpvt_s", features=True)


def test_load_weights_api(tmp_path, svt_ref, ref_logits):
    path = _save(svt_ref.state_dict(), tmp_path / "w.pth")
    model = create_model("svt_s")
    info = load_weights(model, path)
    assert info.sha256 and info.path.endswith("w.pth")
    with torch.no_grad():
        assert (model(X) - ref_logits).abs().max() <= 1e-5


def test_pretrained_fails_in_seconds_when_the_hub_is_unreachable(monkeypatch):
    """huggingface_hub alone retries for ~25 s offline, printing six warnings; we probe the
    host once and say so in one line, and never start the retrying download."""
    import socket

    import huggingface_hub

    calls = []

    def download(repo_id, filename, local_files_only=False, **kw):
        calls.append(local_files_only)
        if local_files_only:
            raise FileNotFoundError("not in the cache")
        raise AssertionError("the retrying download must not start")

    def unreachable(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(WeightsUnavailableError, match=r"huggingface.co is not reachable \(Name or service not known\)"):
        create_model("svt_s", pretrained=True)
    assert calls == [True]


# -- hostile files: kinds, sizes, keys (issue 21) ---------------------------------------------------
def _refused_fast(path, needle: str, limit: int = 1000) -> str:
    """``create_model`` refuses ``path`` with a CheckpointError naming ``needle``, in a bounded
    line, within 30 s (an alarm turns a hang into a failure)."""
    import signal

    def hang(*_):
        raise AssertionError(f"reading {path} hangs")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(30)
    try:
        with pytest.raises(CheckpointError) as e:
            create_model("pcpvt_s", weights=path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    text = str(e.value)
    assert needle in text and "\n" not in text and len(text) < limit, text[:2000]
    return text


def test_checkpoint_paths_of_the_wrong_kind_are_refused_without_opening(tmp_path):
    fifo = tmp_path / "weights.pth"
    os.mkfifo(fifo)
    _refused_fast(fifo, "is a named pipe (FIFO), not a file")
    _refused_fast(tmp_path, "is a folder, not a file")
    (tmp_path / "loop.pth").symlink_to(tmp_path / "loop.pth")
    _refused_fast(tmp_path / "loop.pth", "symlink loop")


def test_a_huge_checkpoint_is_refused_before_reading(tmp_path):
    big = tmp_path / "huge.pth"
    with open(big, "wb") as f:  # sparse: no disk used, and nothing may read it
        f.write(b"PK\x03\x04")
        f.truncate(weights_module.MAX_CHECKPOINT_BYTES + 1)
    _refused_fast(big, "GiB; a Twins checkpoint is at most")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_checkpoint_is_one_line(tmp_path):
    path = _save({"w": torch.zeros(1)}, tmp_path / "locked.pth")
    path.chmod(0)
    try:
        _refused_fast(path, "Permission denied")
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize("keys,needle", [
    ({1: torch.zeros(1)}, "named by parameter names"),                    # torch.save takes any key
    ({"k" * 5_000_000: torch.zeros(1)}, "named by parameter names"),      # 5 MB key, never echoed whole
    ({"": torch.zeros(1)}, "named by parameter names"),
    ({f"x{'y' * 100_000}{i}": torch.zeros(1) for i in range(20)}, "named by parameter names"),
    ({"patch_embeds.0.proj.weight": torch.zeros(()), "head.weight": torch.zeros(())}, "mis-shaped"),  # 0-d
    ({"u" * 1000: torch.zeros(1)}, "unexpected keys"),  # a 1000-character key: listed cut short
])
def test_hostile_state_dicts_are_one_bounded_line(tmp_path, keys, needle):
    path = tmp_path / "hostile.pth"
    torch.save(keys, str(path))
    _refused_fast(path, needle)


def test_hostile_checkpoint_without_tensors_lists_bounded_keys(tmp_path):
    path = _save({"a" * 3_000_000: 1, "b": 2}, tmp_path / "meta.pth")
    text = _refused_fast(path, "holds no tensors")
    assert "characters)" in text  # the long key, cut
