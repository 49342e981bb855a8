"""Element-wise (vector) operation counts of the digital glue between weight matrices.

One place for every such constant; each is per element and documented here and in the README.
RoPE, embedding look-ups and sampling are not modelled.
"""

NORM_OPS_PER_ELEMENT = 4        # RMSNorm: square, accumulate, scale by 1/rms, multiply by the weight
RESIDUAL_OPS_PER_ELEMENT = 1    # residual add
SOFTMAX_OPS_PER_ELEMENT = 3     # exp, accumulate, divide (attention scores and router logits)
TOPK_OPS_PER_ELEMENT = 1        # one compare per router logit for top-k selection
SWIGLU_OPS_PER_ELEMENT = 5      # SiLU(g) * u: exp, add, divide, multiply by g, multiply by u
COMBINE_OPS_PER_ELEMENT = 2     # scale an expert output by its gate weight and accumulate
PARTIAL_SUM_OPS_PER_ADD = 1     # one add per partial-sum addition
