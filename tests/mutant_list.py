"""The deliberate breaks that :mod:`mutants` (``python tests/mutants.py``) applies one at a time:
each names a file, an exact snippet that occurs once in it, its replacement, what that breaks,
and the pytest selection expected to catch it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  #: relative to the repository root
    old: str  #: must occur exactly once in ``path``
    new: str
    breaks: str  #: one line: what the edit breaks
    selection: tuple[str, ...]  #: pytest arguments: node ids / files, optionally "-k", EXPR


def ops_case(test: str, case: str) -> str:
    return f"tests/test_ops.py::{test}[{case}]"


MUTANTS: list[Mutant] = [
    # --- kernels ------------------------------------------------------------------------------
    Mutant(
        "mean_divides_by_k_minus_1", "kernels/mean_max.py",
        "to_output(total / K, mean_ptr)",
        "to_output(total / (K - 1), mean_ptr)",
        "mean_max_fwd divides the sum by K - 1 instead of K",
        (ops_case("test_squeeze", "2x6x7x7-default_tiles-float32-nchw-mean"),),
    ),
    Mutant(
        "max_tie_share_not_divided", "kernels/mean_max.py",
        "share = tl.where(x == m[:, None], (g_max / n)[:, None], 0.0)",
        "share = tl.where(x == m[:, None], g_max[:, None], 0.0)",
        "mean_max_bwd gives every tied maximum the whole gradient instead of grad / count",
        ("tests/test_ops.py::test_max_gradient_is_split_between_ties_like_amax",),
    ),
    Mutant(
        "max_tie_count_forgets_earlier_tiles", "kernels/mean_max.py",
        "tl.where(tile_max == run_max, run_count + tile_count, run_count)",
        "tl.where(tile_max == run_max, tile_count, run_count)",
        "mean_max_fwd's tie count keeps only the last tile's ties when the max recurs in a later tile",
        # caught by test_max_ties_in_different_tiles_share_the_gradient (tiny tiles, ties 15 apart)
        ("tests/test_ops.py", "-k", "ties"),
    ),
    Mutant(
        "max_masked_tail_reads_zero", "kernels/mean_max.py",
        'v = tl.where(mask, v, float("-inf"))',
        "v = tl.where(mask, v, 0.0)",
        "mean_max_fwd's masked (ragged) tail enters the max as 0.0, not -inf: an all-negative row's max becomes 0",
        ("tests/test_ops.py", "-k", "test_spatial_pool and 3x3x3x5"),
    ),
    Mutant(
        "gated_scale_fwd_drops_residual", "kernels/gated_scale.py",
        "y += tl.load(res_ptr",
        "y += 0.0 * tl.load(res_ptr",
        "gated_scale_fwd loads the residual but does not add it",
        (ops_case("test_excite_scale", "2x6x7x7-default_tiles-float32-nchw-sigmoid-residual"),),
    ),
    Mutant(
        "relu_backward_mask_strict", "kernels/gated_scale.py",
        "d = tl.where(y <= 0.0, 0.0, d)",
        "d = tl.where(y < 0.0, 0.0, d)",
        "gated_scale_bwd's ReLU mask tests y < 0: the gradient passes where the ReLU clamped to 0",
        (ops_case("test_excite_scale", "2x6x7x7-default_tiles-float32-nchw-hard_sigmoid-residual_relu"),),
    ),
    Mutant(
        "sigmoid_derivative_is_g", "kernels/gates.py",
        "d = grad * (e / ((1.0 + e) * (1.0 + e)))",
        "d = grad * (1.0 / (1.0 + e))",
        "grad_s / grad_t use the gate itself (for |s|) instead of its derivative",
        (ops_case("test_excite_scale", "2x6x7x7-default_tiles-float32-nchw-sigmoid-plain"),),
    ),
    Mutant(
        "sigmoid_derivative_by_cancellation", "kernels/gates.py",
        "d = grad * (e / ((1.0 + e) * (1.0 + e)))",
        "g = 1.0 / (1.0 + tl.exp(-s))\n        d = grad * (1.0 - g) * g",
        "the sigmoid's derivative as g·(1-g), which cancels for large logits (torch's float32 way)",
        ("tests/test_numerics.py", "-k", "saturated"),
    ),
    Mutant(
        "hard_sigmoid_divides_by_5", "kernels/gates.py",
        "tl.minimum(tl.maximum(s + 3.0, 0.0), 6.0) / 6.0",
        "tl.minimum(tl.maximum(s + 3.0, 0.0), 6.0) / 5.0",
        "hard_sigmoid is clamp(s + 3, 0, 6) / 5: above 1 at the top, wrong slope",
        (ops_case("test_excite_scale", "2x6x7x7-default_tiles-float32-nchw-hard_sigmoid-plain"),),
    ),
    Mutant(
        "bfloat16_truncated", "kernels/rounding.py",
        "bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16",
        "bits = (bits >> 16) << 16",
        "bfloat16 outputs are truncated instead of rounded to nearest-even",
        ("tests/test_numerics.py::test_16bit_outputs_are_rounded_once[nchw-bfloat16]",),
    ),
    # Not in the list: int64 offsets replaced by int32 (e.g. gated_scale_fwd's
    # ``r64 = offs_r.to(tl.int64)`` -> ``tl.int32``). tests/test_large_offsets.py does reach it, but
    # under the Triton interpreter the wrapped address (4 GiB before the storage) is unmapped and the
    # pytest process dies of SIGSEGV: "broken", not a clean catch. (On a GPU the wrapped address
    # would presumably raise an illegal-memory-access error; not checked here, no GPU.)
    # --- the block pipelines -----------------------------------------------------------------
    Mutant(
        "block_counter_not_reset", "kernels/excitation.py",
        """                      ACC, BLOCK_J, MLP_BLOCK_C)
        tl.store(counter_ptr + b, 0)""",
        """                      ACC, BLOCK_J, MLP_BLOCK_C)""",
        "squeeze_excite_fwd leaves its per-sample counters set: the next launch's MLP runs early or never",
        ("tests/test_excitation_block.py::test_block_is_bitwise_repeatable_and_leaves_the_counters_at_zero",),
    ),
    Mutant(
        "block_mlp_before_the_last_program", "kernels/excitation.py",
        "    return ticket == n_programs - 1",
        "    return ticket == n_programs - 2",
        "the next-to-last program of a sample runs its MLP, before the last block of its pooled vector is written",
        ("tests/test_excitation_block.py", "-k", "test_block_matches_float64_reference and small_tiles and 2x37x7x7 and nchw"),
    ),
    Mutant(
        "block_cbam_bias_once", "tritattn/excitation_mlp.py",
        'grads["b2"] = _sum_to(grads["b2"], grad_s, 2.0 if pool == "mean_max_both" else 1.0)',
        'grads["b2"] = _sum_to(grads["b2"], grad_s, 1.0)',
        "the gradient of CBAM's fc2 bias counts one of its two uses (mlp(mean) + mlp(max))",
        ("tests/test_excitation_block.py", "-k", "test_block_matches_float64_reference and mean_max_both and 2x37x7x7 and default_tiles and nchw"),
    ),
    Mutant(
        "split_mlp_cbam_bias_once", "tritattn/excitation_mlp.py",
        '_linear(a, w2.t(), b2, s, 2.0 if pool == "mean_max_both" else 1.0)',
        "_linear(a, w2.t(), b2, s)",
        "the split path's MLP adds CBAM's fc2 bias once, though mlp(mean) + mlp(max) uses it twice",
        ("tests/test_excitation_block.py", "-k", "test_block_matches_float64_reference and mean_max_both and split and 2x37x7x7 and nchw"),
    ),
    Mutant(
        "split_taps_circular_fold_swapped", "tritattn/excitation_mlp.py",
        "grad_v[:, C - pad:] += padded[:, :pad]",
        "grad_v[:, :pad] += padded[:, :pad]",
        "the split path's CECA backward folds the circular padding's left gradient onto the wrong end",
        ("tests/test_excitation_block.py", "-k", "test_block_matches_float64_reference and taps_circular and split and 2x37x7x7 and nchw"),
    ),
    Mutant(
        "split_kept_silu_backward_from_its_output", "tritattn/excitation_mlp.py",
        "grad_h = activation_backward(kept[-1], torch.mm(grad_s, m.w2), m.act)",
        "grad_h = activation_backward(kept[0], torch.mm(grad_s, m.w2), m.act)",
        "the op's split backward takes SiLU's gradient at its kept output silu(h) instead of at h",
        ("tests/test_excitation_step.py", "-k", "test_the_step_gives_the_ops_bits and split and fc_act_fc-silu and plain"),
    ),
    Mutant(
        "step_kept_silu_backward_from_its_output", "tritattn/excitation_step.py",
        "excitation_mlp.activation_backward(kept[-1], torch.mm(grad_s, m.w2), m.act), kept[0]",
        "excitation_mlp.activation_backward(kept[0], torch.mm(grad_s, m.w2), m.act), kept[0]",
        "the short path's split backward takes SiLU's gradient at its kept output silu(h) instead of at h",
        ("tests/test_excitation_step.py", "-k", "test_the_step_gives_the_ops_bits and split and mean_max_avg-fc_act_fc-silu and plain"),
    ),
    Mutant(
        "step_fc1_gradient_from_the_mean_alone", "tritattn/excitation_step.py",
        "grad_w1 = torch.mm(grad_h.t(), v) if needs[2] else None",
        "grad_w1 = torch.mm(grad_h.t(), mean) if needs[2] else None",
        "the short path's backward takes fc1's weight gradient against the mean, not (mean + max) · 0.5",
        ("tests/test_excitation_step.py", "-k", "test_the_step_gives_the_ops_bits and one-launch and mean_max_avg-fc_act_fc-silu and plain"),
    ),
    Mutant(
        "step_backward_plan_ignores_the_gradients_layout", "tritattn/excitation_step.py",
        'apply = ("apply", reduce[1])',
        'apply = ("apply", None)',
        "the short path's backward reuses the apply launch's plan of the first incoming gradient for a gradient of another layout",
        ("tests/test_excitation_step.py", "-k", "test_a_kept_step_takes_gradients_of_either_layout"),
    ),
    Mutant(
        "step_backward_plan_keyed_by_the_inputs_layout", "tritattn/excitation_step.py",
        'grad = grad_y\n    reduce = ("reduce", grad.stride(), tile)',
        'grad = grad_y\n    reduce = ("reduce", x.stride(), tile)',
        "the short path's backward looks its reduce plan up by x's layout, so a gradient of another layout takes x's plan",
        ("tests/test_excitation_step.py", "-k", "test_a_kept_step_takes_gradients_of_either_layout"),
    ),
    Mutant(
        "feature_map_fast_check_lets_an_empty_plane_through", "tritattn/checks.py",
        "0 < shape[1] <= MAX_EXTENT and shape[2] and shape[3] and",
        "0 < shape[1] <= MAX_EXTENT and",
        "check_feature_map's one-test common case passes a map with H = 0 or W = 0",
        ("tests/test_errors.py", "-k", "x-H0 or x-W0"),
    ),
    Mutant(
        "context_step_backward_plan_keyed_without_the_gradients_layout", "tritattn/context_step.py",
        'key = ("backward", grad.stride(0), grad.stride(1))',
        'key = ("backward",)',
        "GCNet's short path keeps one backward plan whatever the gradient's layout, so a gradient with other "
        "strides is read with the first one's",
        ("tests/test_context_step.py", "-k", "test_a_kept_call_takes_gradients_of_either_layout"),
    ),
    Mutant(
        "context_step_workspaces_ignore_the_tile_limits", "tritattn/context_step.py",
        "(x.shape, x.stride(), x.dtype, x.device, tiling.TILE_ELEMENTS, tiling.LONG_SIDE_MAX)",
        "(x.shape, x.stride(), x.dtype, x.device)",
        "GCNet's short path keeps a signature's workspaces when the tile limits change (too few partial rows)",
        ("tests/test_context_step.py", "-k", "test_a_new_tile_limit_is_a_new_call"),
    ),
    Mutant(
        "branches_fast_check_lets_no_branch_through", "tritattn/radix_block.py",
        "if len(shape) == 5 and shape[1] and shape[2] and shape[3] and shape[4]:",
        "if len(shape) == 5 and shape[2] and shape[3] and shape[4]:",
        "check_branches' one-test common case passes branches with R = 0",
        ("tests/test_radix_block.py", "-k", "test_op_errors_are_clear"),
    ),
    Mutant(
        "radix_step_backward_plan_keyed_without_the_gradients_layout", "tritattn/radix_step.py",
        "key = (a.shape, grad.stride())\n    if key not in call.grads:\n        grad = addressable(grad)\n"
        "        key = (a.shape, grad.stride())",
        "key = (a.shape,)\n    if key not in call.grads:\n        grad = addressable(grad)\n"
        "        key = (a.shape,)",
        "the radix short path's backward keeps one plan whatever the gradient's layout, so a channels_last gradient "
        "is read with a contiguous one's strides",
        ("tests/test_radix_step.py", "-k", "test_a_kept_call_takes_gradients_of_either_layout"),
    ),
    Mutant(
        "batch_count_not_advanced", "tritattn/batchnorm.py",
        "    bn.num_batches_tracked.add_(1)\n", "",
        "count_batch does not count the batch (the radix MLP taken as functions, CBAM's and a prologue's BatchNorm)",
        ("tests/test_radix_mlp.py", "-k", "test_the_mlp_as_functions_gives_the_modules_bits and splat-r2-bn and float32 and nchw"),
    ),
    Mutant(
        "batch_count_momentum_none_ignored", "tritattn/batchnorm.py",
        "return bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)",
        "return bn.momentum if bn.momentum is not None else 0.1",
        "count_batch moves a momentum-None BatchNorm's running statistics by 0.1, not as a cumulative average",
        ("tests/test_radix_mlp.py", "-k", "test_batchnorm_and_relu_variants and momentum"),
    ),
    Mutant(
        "radix_mlp_eval_without_running_statistics", "tritattn/radix_mlp.py",
        "batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)",
        "batch_stats = bn.training",
        "the attention MLP taken as functions normalises an eval BatchNorm without running statistics by nothing",
        ("tests/test_radix_mlp.py", "-k", "test_batchnorm_and_relu_variants and eval and statistics"),
    ),
    Mutant(
        "radix_mlp_bypasses_the_softmax_hooks", "tritattn/radix_mlp.py",
        "            or (owner is not None and hooked(owner.__dict__)) or global_module_hooks()):",
        "            or global_module_hooks()):",
        "a hook on SplitAttn's RadixSoftmax is bypassed where the MLP is taken as functions",
        ("tests/test_radix_mlp.py", "-k", "test_a_hooked_layer_is_called_as_a_module and rsoftmax"),
    ),
    Mutant(
        "radix_mlp_one_sample_batch_statistics", "tritattn/radix_mlp.py",
        "return batch != 1 or type(norm) is not nn.BatchNorm2d or not (norm.training or norm.running_mean is None)",
        "return True",
        "a training BatchNorm over one sample is computed as functions instead of raising eager's error",
        ("tests/test_radix_mlp.py", "-k", "test_a_training_batchnorm_over_one_sample"),
    ),
    Mutant(
        "radix_step_pool_gradient_not_divided", "tritattn/radix_step.py",
        "return (grad / call.hw).view(call.spread)",
        "return grad.view(call.spread)",
        "the radix short path's pool gradient is not divided by H·W",
        ("tests/test_radix_step.py", "-k", "test_the_pool_gradient_is_a_broadcast_view"),
    ),
    Mutant(
        "radix_step_grad_x5_in_the_output_layout", "tritattn/radix_step.py",
        "self.grad_x5 = (x5.shape, _new_like(meta).stride(), dtype, device)",
        "self.grad_x5 = (x5.shape, torch.empty(x5.shape, device='meta').stride(), dtype, device)",
        "the radix short path writes grad_x5 NCHW-contiguous whatever x5's layout (channels_last x gets an NCHW gradient)",
        ("tests/test_radix_step.py", "-k", "test_gradients_of_either_input"),
    ),
    Mutant(
        "step_mean_max_avg_gradient_not_halved", "tritattn/excitation_step.py",
        'work["grad_max"] = grad_v.mul_(0.5)',
        'work["grad_max"] = grad_v',
        "the short path's split backward gives mean and max the whole gradient of v = (mean + max) · 0.5",
        ("tests/test_excitation_step.py", "-k", "test_the_step_gives_the_ops_bits and split and mean_max_avg-fc_act_fc-silu and plain"),
    ),
    Mutant(
        "known_call_ignores_the_dtype", "tritattn/excitation_step.py",
        "return (x.shape, x.stride(), x.dtype, x.device,",
        "return (x.shape, x.stride(), x.device,",
        "a block's kept call (its checks passed, its path) is taken for an x of another dtype, unchecked",
        ("tests/test_known_calls.py::test_a_bad_input_after_good_ones_gets_the_checks_errors",),
    ),
    Mutant(
        "known_call_ignores_the_switches", "tritattn/excitation_step.py",
        "act_out, state, excitation_block.enabled,",
        "act_out, state,",
        "a block keeps taking its kernel path after the block pipeline is switched off",
        ("tests/test_known_calls.py::test_switches_and_the_path_state_decide_again",),
    ),
    Mutant(
        "split_hidden_norm_not_in_the_backward", "tritattn/excitation_mlp.py",
        "            grad_h = grad_h * scale\n",
        "            grad_h = grad_h\n",
        "the split path's backward of an SE with a BatchNorm in its MLP skips the BatchNorm's scale on the way to fc1 and x",
        ("tests/test_excitation_block.py", "-k", "test_se_with_a_batchnorm and mean_max_avg and split and nchw"),
    ),
    Mutant(
        "path_estimate_takes_the_slowest", "tritattn/paths.py",
        "return min(estimates, key=estimates.__getitem__), estimate_reason(estimates, gpu)",
        "return max(estimates, key=estimates.__getitem__), estimate_reason(estimates, gpu)",
        "the path choice takes the candidate the critical-path model estimates slowest",
        ("tests/test_excitation_paths.py::test_the_model_splits_a_long_mlp_tail_and_keeps_a_short_one",),
    ),
    Mutant(
        "scale_taps_mirrored", "kernels/channel_taps.py",
        "shift = PAD - t[None, :] if TRANSPOSED else t[None, :] - PAD",
        "shift = PAD - t[None, :] if TRANSPOSED else PAD - t[None, :]",
        "the split path's scale launch applies ECA's taps mirrored (a convolution for the correlation)",
        ("tests/test_excitation_block.py", "-k", "test_block_matches_float64_reference and taps_zero and 2x37x7x7 and split and nchw"),
    ),
    Mutant(
        "taps_backward_not_transposed", "kernels/channel_taps.py",
        "shift = PAD - t[None, :] if TRANSPOSED else t[None, :] - PAD",
        "shift = t[None, :] - PAD if TRANSPOSED else t[None, :] - PAD",
        "ECA's backward (the split path's apply launch, the one-launch path's tail) takes v's gradient through the taps instead of their transpose",
        ("tests/test_excitation_block.py", "-k", "test_block_matches_float64_reference and taps_zero and 2x37x7x7 and split and nchw"),
    ),
    Mutant(
        "apply_taps_despite_a_prologue_batchnorm", "tritattn/excitation_mlp.py",
        'return mlp.startswith("taps") and pool == "mean" and not pro_norm',
        'return mlp.startswith("taps") and pool == "mean"',
        "the apply launch computes the taps' input gradient where a prologue BatchNorm's backward must read it first",
        ("tests/test_prologue.py", "-k", "test_prologue_with_ecas_taps_on_both_paths and taps_zero and batch_stats and split and nchw"),
    ),
    Mutant(
        "scale_taps_without_bias", "kernels/channel_taps.py",
        "        out += tl.load(bias_ptr).to(ACC)",
        "        out += 0.0 * tl.load(bias_ptr).to(ACC)",
        "the split path's scale launch leaves ECA's conv bias out of s",
        ("tests/test_excitation_block.py", "-k", "test_block_matches_float64_reference and taps_zero and 2x37x7x7 and split and nchw"),
    ),
    Mutant(
        "scale_taps_s_stored_by_the_second_column_block", "kernels/gated_scale.py",
        "if tl.program_id(0) % tl.cdiv(K, BLOCK_K) == 0:",
        "if tl.program_id(0) % tl.cdiv(K, BLOCK_K) == 1:",
        "the split path's scale launch stores s from the second column block: where a row has one, s is never written",
        ("tests/test_excitation_block.py", "-k", "test_block_in_each_dtype_with_float32_weights and taps_zero and split and float32 and nchw"),
    ),
    Mutant(
        "scale_taps_padding_always_zero", "tritattn/launch.py",
        "return dict(TAPS=k, PAD=(k - 1) // 2, CIRCULAR=circular,",
        "return dict(TAPS=k, PAD=(k - 1) // 2, CIRCULAR=False,",
        "the split path's scale launch pads CECA's channel axis with zeros instead of circularly",
        ("tests/test_excitation_block.py", "-k", "test_block_matches_float64_reference and taps_circular and 3x6x3x5 and split and nchw"),
    ),
    Mutant(
        "radix_deferred_gradient_dropped", "tritattn/radix_step.py",
        "if deferred is not None and deferred[0] == task:",
        "if False:",
        "the pool's backward ignores the combine's deferred part of x5's gradient (a · g is lost)",
        ("tests/test_radix_step.py", "-k", "test_a_training_step_gives_the_ops_bits and splat-r2-bn and float32 and nchw"),
    ),
    Mutant(
        "radix_defers_to_a_pool_that_will_not_run", "tritattn/radix_step.py",
        "return pool.ran_in != torch._C._current_graph_task_id() and torch._C._will_engine_execute_node(pool)",
        "return pool.ran_in != torch._C._current_graph_task_id()",
        "the combine defers x5's gradient to a pool node the backward never runs (an attention not made from the pooled output)",
        ("tests/test_radix_step.py", "-k", "test_a_deferred_combine_backward_gives_the_ops_gradients and unused"),
    ),
    Mutant(
        "radix_apply_without_the_pool_term", "kernels/radix_combine.py",
        "grad_x = as_materialised(grad_x, grad_x_ptr) + spread[:, None]",
        "grad_x = as_materialised(grad_x, grad_x_ptr)",
        "the deferred apply launch writes a · g without the pooled gradient's share",
        ("tests/test_radix_step.py", "-k", "test_a_training_step_gives_the_ops_bits and splat-r2-bn and float32 and nchw"),
    ),
    Mutant(
        "radix_links_a_pool_of_other_branches", "tritattn/radix_step.py",
        "return node if producer is not None and node.next_functions[0][0] is producer else None",
        "return node",
        "the combine defers x5's gradient to the pool of other branches (their gradient gets x5's share)",
        ("tests/test_radix_step.py::test_the_combine_defers_only_to_the_pool_of_its_own_branches",),
    ),
    Mutant(
        "cbam_conv_taps_flipped", "kernels/cbam_spatial.py",
        "ww = w[:, None] + (dx[None, :] - pad)",
        "ww = w[:, None] + (pad - dx[None, :])",
        "CBAM's forward conv flips its kernel left-right (a correlation becomes a convolution)",
        ("tests/test_cbam_block.py", "-k", "test_cbam_inference_matches_float64_reference and 37x5x3 and nchw"),
    ),
    Mutant(
        "block_hidden_norm_not_in_the_backward", "kernels/excitation.py",
        "            grad_h = grad_h * scale\n",
        "            grad_h = grad_h\n",
        "the backward of an SE with a BatchNorm in its MLP skips the BatchNorm's scale on the way to fc1 and x",
        ("tests/test_excitation_block.py", "-k", "test_se_with_a_batchnorm and mean_max_avg and default_tiles and nchw"),
    ),
    Mutant(
        "cbam_running_var_biased", "kernels/cbam_spatial.py",
        "        unbiased = m2 / (n - 1.0)",
        "        unbiased = m2 / n",
        "CBAM's spatial BatchNorm moves its running variance by the biased batch variance (torch uses N / (N - 1))",
        ("tests/test_cbam_block.py", "-k", "test_cbam_step_matches_float64_reference and train and 37x5x3 and default_tiles and nchw and not Light"),
    ),
    Mutant(
        "cbam_transposed_conv_not_flipped", "kernels/cbam_spatial_bwd.py",
        "    qh = h[:, None] - (ky[None, :] - pad)",
        "    qh = h[:, None] + (ky[None, :] - pad)",
        "the spatial conv's backward applies the conv instead of its transpose",
        ("tests/test_cbam_block.py", "-k", "test_cbam_step_matches_float64_reference and train and 37x5x3 and default_tiles and nchw and not Light"),
    ),
    Mutant(
        "cbam_bn_backward_drops_the_mean", "kernels/cbam_spatial_bwd.py",
        "        gt = gt - mean_g - ((u - mu) * inv_std) * mean_gx",
        "        gt = gt - ((u - mu) * inv_std) * mean_gx",
        "the training BatchNorm's backward forgets the gradient through the batch mean",
        ("tests/test_cbam_block.py", "-k", "test_cbam_step_matches_float64_reference and train and 37x5x3 and default_tiles and nchw and not Light"),
    ),
    Mutant(
        "cbam_max_grad_to_every_channel", "kernels/excitation.py",
        "max_term = tl.where(z == z_max[None, :], share[None, :], 0.0)",
        "max_term = tl.where(z <= z_max[None, :], share[None, :], 0.0)",
        "the gradient of the spatial max over channels reaches every channel, not only the max",
        ("tests/test_cbam_block.py", "-k", "test_cbam_step_matches_float64_reference and train and 37x5x3 and default_tiles and nchw and not Light"),
    ),
    Mutant(
        "cbam_conv_grad_from_the_first_program_only", "kernels/cbam_spatial_bwd.py",
        "    wrow = tl.sum(grad_u[:, None] * v, axis=0)",
        "    wrow = tl.where(pid == 0, tl.sum(grad_u[:, None] * v, axis=0), 0.0)",
        "the conv weight's gradient sums the first program's partial only",
        ("tests/test_cbam_block.py", "-k", "test_cbam_step_matches_float64_reference and train and 37x5x3 and default_tiles and nchw and not Light"),
    ),
    Mutant(
        "tree_moments_drop_the_spread_of_the_means", "kernels/ticket_tree.py",
        "m2 = tl.sum(m2_i, axis=0) + tl.sum(n_i * (mean_i - mean) * (mean_i - mean), axis=0)",
        "m2 = tl.sum(m2_i, axis=0)",
        "the merge of (n, mean, M2) rows forgets the groups' spread about the common mean: CBAM's batch variance too small",
        ("tests/test_ticket_tree.py", "-k", "test_the_root_holds and moments and 65-8"),
    ),
    Mutant(
        "tree_ragged_group_waits_for_a_full_one", "kernels/ticket_tree.py",
        "root = last_of_sample(counter_ptr, slot + g, tl.minimum(n - g * FAN, FAN))",
        "root = last_of_sample(counter_ptr, slot + g, FAN)",
        "a merge tree's last, ragged group waits for FAN tickets that never come: no program becomes the root",
        ("tests/test_ticket_tree.py", "-k", "test_the_root_holds and sum and 65-64"),
    ),
    Mutant(
        "prologue_act_backward_dropped", "kernels/excitation.py",
        "        grad_x = activation_backward(z, grad_x, PRO_ACT)\n",
        "        grad_x = grad_x\n",
        "the prologue's backward forgets act'(z): the producer's activation gets the gradient of its output",
        ("tests/test_prologue.py", "-k", "test_prologue_matches_float64_reference and 3x6x3x5-running_stats and small_tiles and nchw and hardswish"),
    ),
    Mutant(
        "prologue_batch_norm_backward_drops_the_mean", "kernels/excitation.py",
        "            grad_x = grad_x - total[:, None] - x_hat * total_hat[:, None]",
        "            grad_x = grad_x - x_hat * total_hat[:, None]",
        "the prologue BatchNorm's training backward forgets the gradient through the batch mean",
        ("tests/test_prologue.py", "-k", "test_prologue_matches_float64_reference and 2x37x7x7-batch_stats and default_tiles and nchw and silu"),
    ),
    Mutant(
        "prologue_masked_tail_enters_the_pool", "kernels/norm_act.py",
        "        x = tl.where(mask, as_materialised(activation(z, PRO_ACT), x_ptr), 0.0)",
        "        x = as_materialised(activation(z, PRO_ACT), x_ptr)",
        "the prologue's masked (ragged) tail, act(shift) instead of 0, enters the pooled sums",
        ("tests/test_prologue.py", "-k", "test_prologue_matches_float64_reference and 3x6x3x5-running_stats and small_tiles and nchw and hardswish"),
    ),
    Mutant(
        "batch_stats_normalise_with_unbiased_var", "kernels/prologue_norm.py",
        "    tl.store(stats_ptr + C + offs_r, m2 / n, mask=mask_r)",
        "    tl.store(stats_ptr + C + offs_r, m2 / tl.maximum(n - 1.0, 1.0), mask=mask_r)",
        "the prologue BatchNorm normalises with the unbiased batch variance (torch uses the biased one)",
        ("tests/test_prologue.py", "-k", "test_prologue_matches_float64_reference and 2x37x7x7-batch_stats and default_tiles and nchw and silu"),
    ),
    Mutant(
        "batch_stats_counter_not_reset", "kernels/prologue_norm.py",
        "        tl.store(counter_ptr + slot, 0)",
        "        pass",
        "batch_stats_fwd leaves its group counters at their ticket count: the next launch never merges its partials",
        ("tests/test_prologue.py::test_prologue_is_bitwise_repeatable_and_leaves_the_counters_at_zero",),
    ),
    Mutant(
        "batch_stats_group_counts_from_row_0", "kernels/prologue_norm.py",
        "        start = row0 + e * unit  # the entry's first partial row",
        "        start = e * unit  # mutant: the entry's first partial row",
        "batch_stats_fwd's merge of a group of partial rows counts their values as if the group began at row 0",
        ("tests/test_batch_stats.py", "-k", "several_groups"),
    ),
    Mutant(
        "prologue_norm_bwd_mean_term_not_over_k", "kernels/prologue_norm.py",
        "        gm = tl.load(grad_mean_ptr + bc, mask=mask, other=0.0) / K",
        "        gm = tl.load(grad_mean_ptr + bc, mask=mask, other=0.0)",
        "the BatchNorm's S and T take the pooling's gradient without its 1 / (H·W)",
        ("tests/test_prologue.py", "-k", "test_prologue_matches_float64_reference and 2x37x7x7-batch_stats and default_tiles and nchw and silu"),
    ),
    # --- host side ----------------------------------------------------------------------------
    Mutant(
        "launch_swaps_x_batch_row_strides", "tritattn/launch.py",
        "return p, _rows_grid(p), (*xs, *ms, *Ms), dict(p.flags, ACC=_acc_dtype(x))",
        "return p, _rows_grid(p), (xs[1], xs[0], xs[2], *ms, *Ms), dict(p.flags, ACC=_acc_dtype(x))",
        "launch.mean_max_fwd passes x's batch and row strides swapped",
        # B = C = 3: the swapped strides still address x in bounds (a transpose of B and C)
        ("tests/test_ops.py", "-k", "test_squeeze and 3x3x3x5"),
    ),
    Mutant(
        "squeeze_mean_backward_misses_1_over_hw", "tritattn/autograd.py",
        "return (grad_mean / (H * W))[:, :, None, None].expand(ctx.x_shape), None, None",
        "return grad_mean[:, :, None, None].expand(ctx.x_shape), None, None",
        "squeeze's autograd formula for the mean alone forgets the 1/(H·W)",
        (ops_case("test_squeeze", "2x6x7x7-default_tiles-float32-nchw-mean"),),
    ),
    Mutant(
        "excite_grad_residual_none", "tritattn/autograd.py",
        "grad_res = grad_y  # d(y)/d(residual) is the identity",
        "grad_res = None  # mutant: should be grad_y",
        "excite_scale's autograd formula returns no gradient for the residual (identity act)",
        (ops_case("test_excite_scale", "2x6x7x7-default_tiles-float32-nchw-sigmoid-residual"),),
    ),
    Mutant(
        "excite_fallback_drops_residual", "tritattn/modules.py",
        "            if residual is not None:\n                y = y + residual\n",
        "            if residual is not None:\n                y = y\n",
        "ChannelExcitation.excite without a gate kernel (eager fallback) drops the residual",
        ("tests/test_fallback.py::test_excite_without_a_gate_kernel_adds_residual_and_act",),
    ),
    # --- tuner --------------------------------------------------------------------------------
    Mutant(
        "tuner_picks_slowest", "tritattn/tuning.py",
        "    return min((i for i in built if spills[i] == least), key=timings.__getitem__)",
        "    return max((i for i in built if spills[i] == least), key=timings.__getitem__)",
        "Tuner._benchmark keeps the slowest candidate",
        ("tests/test_tuning.py::test_the_fastest_candidate_wins",),
    ),
    Mutant(
        "tuner_keeps_spilling_configs", "tritattn/tuning.py",
        "    least = min(spills[i] for i in built)",
        "    least = max(spills[i] for i in built)",
        "Tuner._benchmark prefers the candidates whose compiled kernel spills registers",
        ("tests/test_spills.py::test_the_tuner_drops_configs_that_spill",),
    ),
    Mutant(
        "tuner_tunes_in_deterministic_mode", "tritattn/tuning.py",
        "    if torch.are_deterministic_algorithms_enabled():",
        "    if False and torch.are_deterministic_algorithms_enabled():",
        "torch.use_deterministic_algorithms(True) no longer switches tuning off",
        ("tests/test_tuning.py::test_tuning_switched_off_uses_the_default_without_benchmarking"
         "[torch.use_deterministic_algorithms(True)]",),
    ),
    Mutant(
        "tuner_shipped_table_before_user_cache", "tritattn/tuning.py",
        '((_user_table, "user cache", False), (_shipped_table, "shipped table", True))',
        '((_shipped_table, "shipped table", True), (_user_table, "user cache", False))',
        "the shipped table is consulted before the user cache",
        ("tests/test_tuning.py::test_the_user_cache_beats_the_shipped_table",),
    ),
    Mutant(
        "tuning_cache_format_unchecked", "tritattn/tuning.py",
        'if data.get("format") != FORMAT_VERSION:',
        "if False:  # mutant: format version not checked",
        "ConfigTable.load reads a cache of another format version",
        ("tests/test_tuning.py::test_a_cache_of_another_format_is_ignored_with_a_warning",),
    ),
    # --- convert and fusion -------------------------------------------------------------------
    Mutant(
        "prologue_probe_accepts_anything", "tritattn/probe.py",
        "                if expected.shape != got.shape or not torch.allclose(got, expected, rtol=1e-5, atol=1e-6):",
        "                if expected.shape != got.shape:",
        "convert takes in a producer whose output something else reads (the probe no longer compares values)",
        ("tests/test_prologue.py::test_a_producer_read_by_something_else_is_not_taken_in",),
    ),
    Mutant(
        "prologue_module_getattr_removed", "tritattn/producer.py",
        "__getattr__ = class_lookup(__name__, _PREFIX, lambda: list(PASSTHROUGH_PEERS), passthrough_class)",
        "_getattr_removed = class_lookup(__name__, _PREFIX, lambda: list(PASSTHROUGH_PEERS), passthrough_class)",
        "tritattn.prologue has no module __getattr__: a model with a producer taken in cannot be unpickled in a fresh process",
        ("tests/test_prologue.py::test_a_block_with_its_producer_taken_in_loads_in_a_fresh_process",),
    ),
    Mutant(
        "prologue_running_stats_not_moved", "tritattn/modules.py",
        "            update_running_stats(norm.running_mean, norm.running_var, stats[0::2], factor)\n",
        "            pass\n",
        "an SE block that takes in its producer's BatchNorm leaves the BatchNorm's running statistics where they were",
        ("tests/test_prologue.py", "-k", "test_converted_block_takes_in_its_producer and timm-efficientnet"),
    ),
    Mutant(
        "fused_basic_tail_drops_residual", "tritattn/fusion.py",
        "x = self.bn2(self.conv2(x))\n    if self.downsample is not None:\n"
        "        shortcut = self.downsample(shortcut)\n    return self.se.excite(x, shortcut, \"relu\")",
        "x = self.bn2(self.conv2(x))\n    if self.downsample is not None:\n"
        "        shortcut = self.downsample(shortcut)\n    return self.se.excite(x, None, \"relu\")",
        "the fused BasicBlock tail is relu(se(x)): the shortcut is not added",
        ("tests/test_convert_fusion.py::test_fused_model_falls_back_when_a_hook_is_added",),
    ),
    Mutant(
        "fused_bottleneck_tail_drops_relu", "tritattn/fusion.py",
        "x = self.bn3(self.conv3(x))\n    if self.downsample is not None:\n"
        "        shortcut = self.downsample(shortcut)\n    return self.se.excite(x, shortcut, \"relu\")",
        "x = self.bn3(self.conv3(x))\n    if self.downsample is not None:\n"
        "        shortcut = self.downsample(shortcut)\n    return self.se.excite(x, shortcut, \"identity\")",
        "the fused Bottleneck tail is se(x) + shortcut: the final ReLU is dropped",
        ("tests/test_convert_models.py::test_converted_model_matches_peer[timm/seresnet50]",),
    ),
    Mutant(
        "fusion_allows_drop_path", "tritattn/fusion.py",
        "if drop_path is not None and type(drop_path) is not nn.Identity:",
        "if False:  # mutant: a drop path no longer blocks fusion",
        "fusion_blocker no longer refuses a block with a drop path (the fused tail would skip it)",
        ("tests/test_convert_fusion.py::test_unsafe_tails_are_not_fused[drop_path]",),
    ),
    Mutant(
        "fusion_module_getattr_removed", "tritattn/fusion.py",
        "__getattr__ = class_lookup(__name__, _FUSED_PREFIX, lambda: list(MIRRORED_FORWARDS), fused_class)",
        "_getattr_removed = class_lookup(__name__, _FUSED_PREFIX, lambda: list(MIRRORED_FORWARDS), fused_class)",
        "tritattn.fusion has no module __getattr__: a fused model cannot be unpickled in a fresh process",
        ("tests/test_convert_fusion.py::test_fused_model_loads_in_a_fresh_process",),
    ),
    Mutant(
        "convert_skips_torchvision_se", "tritattn/convert.py",
        "pool.output_size in (1, (1, 1))",
        "pool.output_size in ((1, 1),)",
        "convert skips torchvision's SqueezeExcitation (its AdaptiveAvgPool2d(1) no longer counts as global)",
        ("tests/test_convert_modules.py::test_convert_keeps_parameters_hooks_and_training_mode",),
    ),
    Mutant(
        "convert_makes_new_parameters", "tritattn/convert.py",
        "            module.__class__ = twin\n",
        "            module.__class__ = twin\n"
        "            for m in module.modules():  # mutant: same values, new Parameter objects\n"
        "                m._parameters = {k: v if v is None else nn.Parameter(v.detach().clone())"
        " for k, v in m._parameters.items()}\n",
        "convert gives a replaced block new Parameter objects: an optimizer built before no longer updates it",
        ("tests/test_convert_modules.py::test_convert_keeps_parameters_hooks_and_training_mode",),
    ),
    Mutant(
        "revert_leaves_tails_fused", "tritattn/convert.py",
        "        if unfuse(module):\n",
        "        if False:  # mutant: fused tails stay fused\n",
        "revert gives the attention blocks their classes back but leaves the SE-ResNet tails fused",
        ("tests/test_convert_revert.py::test_revert_gives_back_the_model_before_convert[timm/seresnet18]",),
    ),
    Mutant(
        "dry_run_converts", "tritattn/convert.py",
        "    if not dry_run:\n",
        "    if True:  # mutant: a dry run converts the model\n",
        "convert(dry_run=True) re-classes the blocks it reports",
        ("tests/test_convert_revert.py::test_dry_run_reports_what_convert_does_and_touches_nothing[every_peer_block]",),
    ),
    # --- split attention / selective kernel, global context, the original SENet ------------------
    Mutant(
        "radix_pool_reads_one_branch", "kernels/radix_combine.py",
        "        row_ptrs += sxr\n",
        "        row_ptrs += 0  # mutant: every round reads branch 0\n",
        "radix_pool_fwd pools the first branch R times instead of the sum of the branches",
        ("tests/test_radix_block.py", "-k", "test_radix_ops_match_float64"),
    ),
    Mutant(
        "radix_combine_ignores_weights", "kernels/radix_combine.py",
        "        acc += a[:, None] * x\n",
        "        acc += x  # mutant: the attention weights are dropped\n",
        "radix_combine_fwd sums the branches without their attention weights",
        ("tests/test_radix_block.py", "-k", "test_radix_ops_match_float64"),
    ),
    Mutant(
        "radix_grad_a_keeps_the_last_pixel_block", "kernels/radix_combine.py",
        "acc = tl.where(radix == r, acc + tl.sum(g * x, axis=1)[None, :], acc)",
        "acc = tl.where(radix == r, tl.sum(g * x, axis=1)[None, :], acc)",
        "radix_combine_bwd's grad_a keeps only the last block of pixels instead of their sum",
        ("tests/test_radix_block.py", "-k", "test_radix_ops_with_tiny_tiles"),
    ),
    Mutant(
        "radix_prologue_uses_the_first_branch_statistics", "kernels/radix_combine.py",
        "    total = tl.zeros([BLOCK_R], dtype=ACC)\n    row_ptrs = x_ptr + b * sxb + c64[:, None] * sxc  # branch r = 0; stepped by sxr (64-bit pointers)\n    for r in range(R):\n        # branch r's BatchNorm channels r·C + c (zeros, unused, without PRO_NORM)\n        scale, shift, _, _ = prologue_affine(pw_ptr, pb_ptr, pm_ptr, pv_ptr, p_eps, r * C + c64,",
        "    total = tl.zeros([BLOCK_R], dtype=ACC)\n    row_ptrs = x_ptr + b * sxb + c64[:, None] * sxc  # branch r = 0; stepped by sxr (64-bit pointers)\n    for r in range(R):\n        # branch r's BatchNorm channels r·C + c (zeros, unused, without PRO_NORM)\n        scale, shift, _, _ = prologue_affine(pw_ptr, pb_ptr, pm_ptr, pv_ptr, p_eps, 0 * r * C + c64,",
        "the inference squeeze normalises every branch with the first branch's bn0 statistics",
        ("tests/test_radix_block.py", "-k", "test_inference_runs_bn0_and_act0_inside_the_kernels"),
    ),
    Mutant(
        "context_pool_without_max_subtraction", "kernels/context_pool.py",
        "    m = tl.max(logit, axis=0)\n",
        "    m = tl.max(logit, axis=0) * 0.0  # mutant: exp of the raw logits (exact, not stable)\n",
        "context_pool_partials takes exp of the raw logits: the same math, overflowing for large logits",
        ("tests/test_context_block.py", "-k", "test_large_logits_stay_finite_and_correct"),
    ),
    Mutant(
        "context_merge_without_rescaling", "kernels/context_pool.py",
        "acc = acc * old_scale + tl.sum(part * new_scale[:, None], axis=0)",
        "acc = acc + tl.sum(part * new_scale[:, None], axis=0)",
        "context_pool_combine does not rescale the running sum when the running max grows",
        ("tests/test_context_block.py", "-k", "test_context_pool_over_several_pixel_blocks"),
    ),
    Mutant(
        "context_bwd_forgets_the_softmax_centering", "kernels/context_pool.py",
        "dlogit = alpha * (d_alpha - tl.sum(k, axis=0))",
        "dlogit = alpha * d_alpha",
        "context_pool_bwd drops k = Σ α·dα from the softmax's backward",
        ("tests/test_context_block.py", "-k", "test_context_pool_matches_float64_reference"),
    ),
    Mutant(
        "senet_block_tail_skips_a_relu", "tritattn/fusion.py",
        "    out = self.relu(self.bn2(self.conv2(out)))\n    if self.downsample is not None:",
        "    out = self.bn2(self.conv2(out))  # mutant: the ReLU after bn2 dropped\n    if self.downsample is not None:",
        "the fused SEResNetBlock forward skips the ReLU before the SE: the probe must refuse the fusion",
        ("tests/test_convert_fusion.py::test_the_original_senet_tails_are_fused",),
    ),
    # --- the kill switch and tune ---------------------------------------------------------------
    Mutant(
        "backend_ignores_disable", "tritattn/backend.py",
        "    if kernels_disabled() or not TRITON_AVAILABLE:\n        return \"torch\"",
        "    if not TRITON_AVAILABLE:  # mutant: the kill switch is ignored\n        return \"torch\"",
        "with tritattn.disabled() / TRITATTN_DISABLE=1 the Triton kernels still run",
        ("tests/test_disable.py::test_disabled_scope_runs_the_eager_path_and_no_kernel",),
    ),
    Mutant(
        "tune_keeps_running_statistics", "tritattn/tune_model.py",
        "                buffer.copy_(value)",
        "                pass  # mutant: buffers not restored",
        "tune leaves the BatchNorm running statistics of its example run in the model",
        ("tests/test_tune_model.py::test_tune_decides_every_problem_and_leaves_no_trace",),
    ),
    # --- issue 24: tuning policy, workspaces, tracing -----------------------------------------
    Mutant(
        "selective_kernel_skips_its_plan_without_grad_mode", "tritattn/split_attention.py",
        "plan = None if torch.is_grad_enabled() and x.requires_grad else self._plan()",
        "plan = None if x.requires_grad else self._plan()",
        "SelectiveKernel skips its plan, and so the inference kernels, for an x that requires grad even under no_grad",
        ("tests/test_radix_block.py", "-k", "test_a_gradient_through_x_takes_the_per_op_path_and_no_grad_the_kernels"),
    ),
    Mutant(
        "global_context_skips_its_plan_without_grad_mode", "tritattn/global_context.py",
        "plan = None if torch.is_grad_enabled() and x.requires_grad else self._plan()",
        "plan = None if x.requires_grad else self._plan()",
        "GCNet skips its plan, and so the in-kernel MLP, for an x that requires grad even under no_grad",
        ("tests/test_context_block.py", "-k", "test_a_gradient_through_x_takes_the_per_op_path_without_the_plan"),
    ),
    Mutant(
        "tuning_benchmarks_on_first_use_by_default", "tritattn/tuning.py",
        "    if not ON_FIRST_USE and not _benchmark_scopes:",
        "    if False and not ON_FIRST_USE and not _benchmark_scopes:",
        "a problem no table holds is benchmarked in the middle of a run although nobody asked for tuning",
        ("tests/test_tuning.py::test_a_problem_no_table_holds_is_not_benchmarked_during_a_run",),
    ),
    Mutant(
        "tuning_nearest_takes_the_farthest_batch", "tritattn/tuning.py",
        "other = min(ranked)[2]",
        "other = max(ranked)[2]",
        "an unseen batch runs the config of the farthest tuned batch instead of the nearest",
        ("tests/test_tuning.py::test_an_unseen_batch_runs_the_nearest_tuned_problem",),
    ),
    Mutant(
        "counters_shared_across_calls", "tritattn/workspaces.py",
        "    return torch.zeros(n, dtype=torch.int32, device=device)",
        "    global _shared\n    if n > _shared.numel():\n        _shared = torch.zeros(max(n, 64), dtype=torch.int32, device=device)\n"
        "    return _shared[:n]\n\n\n_shared = torch.zeros(0, dtype=torch.int32)",
        "the counters are one cached buffer (64 slots or more) shared by every call, replaced by a bigger one (the old design)",
        ("tests/test_workspaces.py::test_a_bigger_call_never_takes_the_counters_a_smaller_call_holds",),
    ),
    Mutant(
        "channel_excitation_traced_through", "tritattn/modules.py",
        "        if is_symbolic(x):\n            return fx_leaf(self, x)\n        return self.excite(x)",
        "        return self.excite(x)",
        "an SE twin is traced through by torch.fx (its checks meet a Proxy) instead of being a leaf",
        ("tests/test_fx.py", "-k", "test_symbolic_trace_keeps_each_block_whole_and_computes_the_same"),
    ),
    Mutant(
        "scripting_compiles_the_fast_forward", "tritattn/modules.py",
        "        if torch.jit.is_scripting():\n            return self.reference_forward(x)\n        if is_symbolic(x):\n            return fx_leaf(self, x)\n        return self.excite(x)",
        "        if is_symbolic(x):\n            return fx_leaf(self, x)\n        return self.excite(x)",
        "torch.jit.script compiles an SE twin's kernel path (not scriptable) instead of its reference forward",
        ("tests/test_torchscript.py", "-k", "test_scripted_model_runs_the_reference_forwards_on_the_same_parameters"),
    ),
    # --- issue 23 §1b: the host's short path ------------------------------------------------
    Mutant(
        "dispatch_skips_autograd", "tritattn/dispatch.py",
        "    if not needs_grad(args):\n        return op._init_fn(*args)\n",
        "    if True:\n        return op._init_fn(*args)\n",
        "a custom op called where autograd must record it runs its implementation bare: no gradient",
        ("tests/test_host_time.py", "-k", "test_an_op_skips_the_dispatcher_with_the_same_results and training"),
    ),
    Mutant(
        "default_config_cache_ignores_the_heuristic", "tritattn/tuning.py",
        "self.num_stages, tiling.TILE_ELEMENTS,\n                               tiling.LONG_SIDE_MAX, tiling.LOOP_STEPS_MAX)",
        "self.num_stages, 4096,\n                               1024, 4)",
        "the cached default config outlives a change of the tile heuristic (TILE_ELEMENTS, LONG_SIDE_MAX)",
        ("tests/test_host_time.py::test_problem_keys_are_cached_per_problem_and_the_default_follows_the_heuristic",),
    ),
    Mutant(
        "block_trusts_the_residual", "tritattn/modules.py",
        "        if residual is not None:\n            check_companion(residual, \"residual\", x, sizes(x))\n",
        "",
        "an SE block's excite(x, residual) runs its pipeline on a residual of another shape",
        ("tests/test_host_time.py::test_a_block_checks_the_residual_it_is_given",),
    ),
    # --- perf/gpu_check.py ----------------------------------------------------------------------
    Mutant(
        "stage_failure_reported_as_passed", "perf/stage_runner.py",
        'status = "passed" if proc.returncode == 0 else "failed"',
        'status = "passed"  # mutant: the exit code is ignored',
        "gpu_check reports a stage that exited with an error as passed",
        ("tests/test_gpu_check.py::test_a_stage_past_its_time_is_interrupted_and_the_next_one_runs",),
    ),
    Mutant(
        "unused_stage_time_is_lost", "perf/gpu_check.py",
        "allotted = left * stage.share / sum(s.share for s in chosen[i:])",
        "allotted = 60 * args.budget_min * stage.share / sum(s.share for s in chosen)",
        "a stage's share is fixed up front: the time an earlier stage left unused never reaches later ones",
        ("tests/test_gpu_check.py::test_a_stage_past_its_time_is_interrupted_and_the_next_one_runs",),
    ),
    Mutant(
        "measured_table_takes_graph_timings", "perf/gpu_summary.py",
        'if r["block"] in reps and not r["cuda_graph"] and r["ms"] is not None]',
        'if r["block"] in reps and r["ms"] is not None]',
        "the README's measured table mixes CUDA-graph replays into the plain timings",
        ("tests/test_gpu_check.py::test_measured_table_takes_the_compiled_case_and_leaves_cuda_graphs_out",),
    ),
    Mutant(
        "cpu_run_lands_as_gpu_figures", "perf/land_results.py",
        'if env["device"]["kind"] != "cuda":',
        'if env["device"]["kind"] == "none":',
        "land_results puts a CPU run's timings in README as GPU figures",
        ("tests/test_gpu_check.py::test_cpu_dry_run_writes_the_results_folder",),
    ),
]
