"""The one FLOP formula (``mmengine/flops.py``): a hand count, the values of the formulas it
replaced, the torch-free sizes against the built model, and the whole-model count against
torch's FLOP counter for the layers it counts."""
from __future__ import annotations

import pytest
import torch

from mmengine import flops
from mmengine.config import ModelConfig
from mmengine.export import model_spec
from mmengine.models import build_model

DIMS = dict(n_mfcc=20, n_mels=128, text_dim=30, symbolic_dim=22, n_classes=4, multilabel=False)
CONFIGS = [ModelConfig(), ModelConfig(stem="strided", cell="gru", pooling="last"),
           ModelConfig(text_fusion="early", cell="rnn", num_layers=3),
           ModelConfig(stem="strided", stem_stages=0, modalities=("mfcc", "text"))]


def test_hand_count_small_stack():
    # D=3, H=2, 2 layers, T=5: layer 0 has G*2 x 3 input and G*2 x 2 recurrent weights, layer 1
    # G*2 x 2 and G*2 x 2; 2 FLOPs per weight per step
    lstm = 2 * (8 * 3 + 8 * 2) * 5 + 2 * (8 * 2 + 8 * 2) * 5
    assert lstm == 720
    assert flops.recurrent_flops(3, 2, 2, 5) == 720
    assert flops.recurrent_flops(3, 2, 2, 5, "gru") == 720 * 3 / 4
    assert flops.recurrent_flops(3, 2, 2, 5, "rnn") == 720 / 4
    assert flops.recurrent_flops(3, 2, 2, 5, "none") == 0
    with pytest.raises(ValueError, match="cell must be one of"):
        flops.recurrent_flops(3, 2, 2, 5, "transformer")


def test_same_values_as_the_formulas_it_replaced():
    # bench/contenders.lstm_flops and bench_native_lstm._flops: T * sum_l 2*4H*(D_l + H)
    def old_contenders(D, H, L, T):
        return T * sum(2 * 4 * H * ((D if k == 0 else H) + H) for k in range(L))

    # bench/bench_gpu_lstm.lstm_flops
    def old_gpu(input_size, hidden, layers, steps):
        total, d = 0, input_size
        for _ in range(layers):
            total += 2 * 4 * hidden * (d + hidden) * steps
            d = hidden
        return total

    for shape in [(148, 128, 2, 1292), (148, 128, 2, 646), (131, 128, 2, 646)]:
        assert flops.recurrent_flops(*shape) == old_contenders(*shape) == old_gpu(*shape)
    assert flops.recurrent_flops(148, 128, 2, 646) == pytest.approx(0.352e9, rel=1e-3)


@pytest.mark.parametrize("cfg", CONFIGS, ids=["dilated-lstm", "strided-gru", "early-rnn",
                                              "pointwise"])
def test_torch_free_sizes_match_the_model(cfg):
    """What mmengine.bench.lstm_flops did (rebuild the model, read every LSTM/GRU/RNN and the
    frame count after the stems) equals the header-only count."""
    model = build_model(cfg, DIMS).eval()
    spec = model_spec(model)
    rnn = model.classifier.rnn
    assert flops.recurrent_shape(spec) == {"cell": cfg.cell, "input_size": rnn.input_size,
                                           "hidden": rnn.hidden_size,
                                           "layers": rnn.num_layers}
    for frames in (1292, 1291, 7):
        assert flops.recurrent_steps(spec, frames) == model.out_frames(frames)
    old = 0.0
    for m in model.modules():
        if isinstance(m, (torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN)):
            g = {torch.nn.LSTM: 4, torch.nn.GRU: 3, torch.nn.RNN: 1}[type(m)]
            for k in range(m.num_layers):
                d = m.input_size if k == 0 else m.hidden_size
                old += 2.0 * g * m.hidden_size * (d + m.hidden_size) * model.out_frames(1292)
    assert flops.model_recurrent_flops(spec, 1292) == old
    spec.pop("fused_dim")  # an older description: computed from the config
    assert flops.recurrent_shape(spec)["input_size"] == rnn.input_size


class _NoRecurrence(torch.nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.hidden = hidden

    def forward(self, x):
        return x.new_zeros(x.shape[0], x.shape[1], self.hidden), None


@pytest.mark.parametrize("cfg", CONFIGS, ids=["dilated-lstm", "strided-gru", "early-rnn",
                                              "pointwise"])
def test_whole_model_against_torch_flop_counter(cfg):
    """Stems + head against ``torch.utils.flop_counter`` with the recurrence stubbed out (the
    counter does not count RNN kernels); the dilated design's spectral flux (a band-sum
    product in torch) is the only thing the counter adds."""
    from torch.utils.flop_counter import FlopCounterMode

    from mmengine.config import FrontendConfig
    from mmengine.export import example_inputs, input_spec

    model = build_model(cfg, DIMS).eval()
    spec, T = model_spec(model), 256
    x = {k: torch.from_numpy(v) for k, v in
         example_inputs(input_spec(model, FrontendConfig()), 2, T).items()}
    model.classifier.rnn = _NoRecurrence(cfg.hidden_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    ours = flops.model_flops(spec, T)
    assert ours["total"] == ours["stems"] + ours["recurrence"] + ours["head"]
    assert ours["recurrence"] == flops.model_recurrent_flops(spec, T)
    got = (ours["stems"] + ours["head"]) * 2  # per window; the counter saw batch 2
    if model.flux is None:
        assert got == counter.get_total_flops()
    else:
        assert 0.99 * counter.get_total_flops() <= got <= counter.get_total_flops()
