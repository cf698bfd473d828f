"""torch.fx on converted models (tritattn/tracing.py): every module tritattn runs — twin, fused
tail, producer taken in — is a leaf of a symbolic trace (one ``call_module`` node, whatever the
tracer), so the GraphModule runs the same kernels and computes what the converted model does;
the functional ops are recorded whole (``call_function`` nodes of the public functions)."""
import copy

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

import tritattn
from tritattn import checks, functional, producer, tracing
from tritattn.context_block import context_pool
from tritattn.radix_block import radix_combine, radix_pool
from conftest import TOLERANCES, assert_close
from fixtures.model_runs import forward_backward, interpreter_friendly  # noqa: F401
from fixtures.peer_models import ONE_BLOCK_PER_STAGE, randomize_norms_
from fixtures.peers import timm
from fixtures.traced_models import FAMILIES, model_input, peer_and_converted, tritattn_modules


def _leaf_calls(gm: torch.fx.GraphModule) -> list[str]:
    return [node.target for node in gm.graph.nodes if node.op == "call_module"]


@pytest.mark.parametrize("family", FAMILIES)
def test_symbolic_trace_keeps_each_block_whole_and_computes_the_same(family, interpreter_friendly):
    _, model = peer_and_converted(family)
    blocks = tritattn_modules(model)
    gm = torch.fx.symbolic_trace(model)
    calls = _leaf_calls(gm)
    assert sorted(path for path in calls if path in blocks) == sorted(blocks), calls  # each once, as a leaf
    assert not any(node.op == "call_function" and "tritattn" in str(node.target) for node in gm.graph.nodes)
    x = model_input()
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))
    model.train()  # training (traced again: a trace keeps the mode of its non-leaf modules, as timm's tests do)
    gm = torch.fx.symbolic_trace(model)
    torch.manual_seed(0)  # torchvision's stochastic depth draws from the global generator
    direct = forward_backward(model, x)
    torch.manual_seed(0)
    traced = forward_backward(gm, x)
    assert torch.equal(traced.output, direct.output)
    assert direct.grads.keys() == traced.grads.keys() and all(torch.equal(traced.grads[k], g) for k, g in direct.grads.items())


@pytest.mark.parametrize("family", FAMILIES)
def test_timm_feature_extractor_returns_the_converted_blocks_outputs(family, interpreter_friendly):
    _, model = peer_and_converted(family)
    nodes = set(timm.models.get_graph_node_names(model)[1])
    # every block is a node; producers taken in pass their input through (their "feature" is not
    # eager's: the README says so) and the extractor keeps torchvision.ops modules whole (the
    # Conv2dNormActivation holding torchvision's producers is one node)
    blocks = {path: block for path, block in tritattn_modules(model).items() if not producer.is_passthrough(block)}
    assert set(blocks) <= nodes
    extractor = timm.models.create_feature_extractor(model, return_nodes=list(blocks))
    seen = {}
    for path, block in blocks.items():
        block.register_forward_hook(lambda module, args, out, path=path: seen.__setitem__(path, out))
    x = model_input()
    with torch.no_grad():
        model(x)
        expected = dict(seen)
        features = extractor(x)
    assert features.keys() == blocks.keys()
    for path in blocks:
        assert torch.equal(features[path], expected[path]), path


def test_every_leaf_class_is_registered_with_timm(interpreter_friendly):
    _, model = peer_and_converted("producers_taken_in")
    peer_and_converted("fused_tails")
    torch.fx.symbolic_trace(model)  # timm was imported after tritattn: registered by then
    notrace = set(timm.models.get_notrace_modules())
    blocks = {type(m) for m in tritattn_modules(model).values()}
    assert blocks <= set(tracing.LEAF_CLASSES) and set(tracing.LEAF_CLASSES) <= notrace
    assert any(cls.__name__.startswith("ResidualFused") for cls in tracing.LEAF_CLASSES)
    assert any(cls.__name__.startswith("TakenIntoNext") for cls in tracing.LEAF_CLASSES)


@pytest.mark.parametrize("name", ["seresnet18", "efficientnet_b0"])
def test_features_only_model_converted_gives_the_unconverted_features(name, interpreter_friendly):
    kwargs = ONE_BLOCK_PER_STAGE if name.startswith("seresnet") else {}
    torch.manual_seed(0)
    peer = timm.create_model(name, features_only=True, **kwargs)
    peer = randomize_norms_(peer, torch.Generator().manual_seed(0)).double().eval()
    converted = copy.deepcopy(peer)
    assert tritattn.convert(converted).replaced
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected, got = peer(x), converted(x)
    assert len(got) == len(expected) == len(peer.feature_info)
    for i, (a, b) in enumerate(zip(got, expected)):
        assert_close(a, b, torch.float64, f"feature {i}")


def test_functional_ops_are_recorded_whole_and_checked_when_the_graph_runs():
    def attend(x, s, residual, t, x5, a, w):
        mean, maximum = functional.squeeze(x, "mean_max")
        y = functional.excite_scale(x, s, "sigmoid", residual, "relu")
        z = functional.spatial_scale(x, t, "hard_sigmoid") + functional.spatial_pool(x).sum(1, keepdim=True)
        return y, z, mean + maximum, radix_pool(x5), radix_combine(x5, a), context_pool(x, w)

    gm = torch.fx.symbolic_trace(attend)
    called = [node.target for node in gm.graph.nodes if node.op == "call_function"]
    public = [functional.squeeze, functional.excite_scale, functional.spatial_scale, functional.spatial_pool,
              radix_pool, radix_combine, context_pool]
    assert all(fn in called for fn in public), called
    B, C, H, W = 2, 5, 3, 4
    args = [torch.randn(B, C, H, W), torch.randn(B, C), torch.randn(B, C, H, W), torch.randn(B, 1, H, W),
            torch.randn(B, 3, C, H, W), torch.randn(B, 3, C), torch.randn(C)]
    for got, expected in zip(gm(*args), attend(*args)):
        assert torch.equal(got, expected)
    args[2] = torch.randn(B, C, H, W + 1)  # a residual of the wrong shape: the graph checks as eager
    with pytest.raises(ValueError, match="residual must have shape"):
        gm(*args)


def test_checks_take_proxies_fake_and_meta_tensors():
    graph = torch.fx.Graph()
    proxy = torch.fx.Proxy(graph.placeholder("x"), torch.fx.proxy.GraphAppendingTracer(graph))
    checks.check_feature_map(proxy)
    checks.check_logits(proxy, proxy)
    checks.check_companion(proxy, "residual", proxy, (2, 5, 3, 4))
    checks.check_channels(proxy, 5, "SEModule")
    meta = torch.empty(2, 5, 3, 4, device="meta")
    checks.check_feature_map(meta)
    checks.check_logits(torch.empty(2, 5, device="meta"), meta)
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(torch.randn(2, 5, 3, 4))
        checks.check_feature_map(fake)
        checks.check_channels(fake, 5, "SEModule")
        with pytest.raises(ValueError, match="built for 6 channels"):
            checks.check_channels(fake, 6, "SEModule")


def test_a_block_traced_as_the_root_says_what_to_trace():
    with pytest.raises(TypeError, match="root of this symbolic trace"):
        torch.fx.symbolic_trace(tritattn.SEModule(8))
    gm = torch.fx.symbolic_trace(nn.Sequential(tritattn.SEModule(8)))  # held by a module: a leaf
    assert _leaf_calls(gm) == ["0"]
