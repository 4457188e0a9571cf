"""torchreid's OSNet-x0.25 MSMT17 checkpoint: loads strictly, maps into the re-ID model, and
gives identity-discriminative features on real CUHK03 crops."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from reidcore.preprocess import PreprocessConfig, decode_image, preprocess_batch
from training.models import (
    InferenceWrapper,
    ModelConfig,
    build_model,
    load_torchreid_osnet,
    osnet_x0_25,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHECKPOINT = "osnet_x0_25_msmt17.pth"
MSMT17_CLASSES = 1041


@pytest.fixture(scope="module")
def checkpoint(shared_weights: Path) -> Path:
    path = shared_weights / CHECKPOINT
    if not path.is_file():
        pytest.skip(f"torchreid checkpoint not available: {path} does not exist")
    return path


@pytest.fixture(scope="module")
def state(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)


def test_checkpoint_loads_strictly(state: dict[str, torch.Tensor]) -> None:
    net = osnet_x0_25(num_classes=MSMT17_CLASSES)
    result = net.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert net.classifier is not None and net.classifier.out_features == MSMT17_CLASSES


def test_mapped_into_reid_model_matches_plain_osnet(
    checkpoint: Path, state: dict[str, torch.Tensor]
) -> None:
    cfg = ModelConfig(backbone="osnet_x0_25", pretrained=str(checkpoint))
    model = build_model(cfg, MSMT17_CLASSES).eval()
    own = model.state_dict()
    assert torch.equal(own["classifier.weight"], state["classifier.weight"])
    assert torch.equal(own["neck.fc.0.weight"], state["fc.0.weight"])
    assert torch.equal(own["neck.fc.1.running_var"], state["fc.1.running_var"])
    assert torch.equal(own["backbone.conv4.1.gate.fc2.bias"], state["conv4.1.gate.fc2.bias"])
    plain = osnet_x0_25(num_classes=MSMT17_CLASSES)
    plain.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 128, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = plain.eval()(x)  # torchreid's eval output: the 512-d fc feature
        out = model(x)
    torch.testing.assert_close(out.embedding, ref)


def test_classifier_reinitialised_when_classes_differ(checkpoint: Path) -> None:
    model = build_model(ModelConfig(backbone="osnet_x0_25"), num_classes=100)
    report = load_torchreid_osnet(model, checkpoint)
    assert not report.classifier_kept
    assert report.reinitialised == ["classifier"]
    n_file = len(torch.load(checkpoint, map_location="cpu", weights_only=True))
    assert report.loaded == n_file - 2  # everything but classifier.weight/bias
    bnneck = build_model(ModelConfig(backbone="osnet_x0_25", bnneck=True), MSMT17_CLASSES)
    assert not load_torchreid_osnet(bnneck, checkpoint).classifier_kept


def test_mismatched_model_errors_name_the_file(checkpoint: Path) -> None:
    wide = build_model(ModelConfig(backbone="osnet_x1_0"), MSMT17_CLASSES)
    with pytest.raises(ValueError, match=f"{CHECKPOINT}.*shape mismatch"):
        load_torchreid_osnet(wide, checkpoint)
    no_fc = build_model(ModelConfig(backbone="osnet_x0_25", embedding_dim=0), MSMT17_CLASSES)
    with pytest.raises(ValueError, match=f"{CHECKPOINT}.*unexpected.*neck.fc"):
        load_torchreid_osnet(no_fc, checkpoint)
    resnet = build_model(ModelConfig(backbone="resnet18"), MSMT17_CLASSES)
    with pytest.raises(TypeError, match="OSNet backbone"):
        load_torchreid_osnet(resnet, checkpoint)


def _first_identities(root: Path, n_ids: int, per_cam: int) -> list[Path]:
    """Up to ``per_cam`` crops per camera of the first ``n_ids`` identities (sorted names)."""
    groups: dict[tuple[int, int], list[Path]] = defaultdict(list)
    for f in sorted(root.glob("*.jpg")):
        groups[(int(f.name[:4]), int(f.name.split("_")[1][1]))].append(f)
    pids = sorted({pid for pid, _ in groups})[:n_ids]
    return [f for pid in pids for cam in (1, 2) for f in groups.get((pid, cam), [])[:per_cam]]


@pytest.mark.slow
@pytest.mark.realdata
def test_features_separate_identities(checkpoint: Path, shared_data: Path) -> None:
    root = shared_data / "cuhk03-np-detected" / "bounding_box_train"
    if not root.is_dir():
        pytest.skip(f"CUHK03-NP crops not available: {root} does not exist")
    files = _first_identities(root, n_ids=20, per_cam=2)
    pid = np.array([int(f.name[:4]) for f in files])
    cam = np.array([int(f.name.split("_")[1][1]) for f in files])
    assert len(set(pid)) == 20 and len(files) >= 60
    images = [decode_image(f.read_bytes()) for f in files]
    x = torch.from_numpy(preprocess_batch(images, PreprocessConfig(height=256, width=128)))
    model = build_model(ModelConfig(backbone="osnet_x0_25", pretrained=str(checkpoint)), 0)
    with torch.no_grad():
        emb = InferenceWrapper(model)(x)[0].numpy()  # [N, 512], unit length
    sim = emb @ emb.T
    same = pid[:, None] == pid[None, :]
    off_diag = ~np.eye(len(pid), dtype=bool)
    gap = sim[same & off_diag].mean() - sim[~same].mean()
    assert gap > 0.1, f"same-identity similarity only {gap:.3f} above different-identity"
    # cross-camera rank-1: each crop against the other camera's crops (chance 1/20)
    hits = []
    for i in range(len(pid)):
        others = np.flatnonzero(cam != cam[i])
        hits.append(pid[others[np.argmax(sim[i, others])]] == pid[i])
    rank1 = float(np.mean(hits))
    assert rank1 > 0.35, f"cross-camera rank-1 {rank1:.2f} (chance 0.05)"
