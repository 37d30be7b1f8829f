"""Grading the grader of chapter 4: correct submissions get full marks, each common mistake
costs points on its own exercise only and is named in the feedback.

Bugs of different exercises share a submission, one bug per exercise at most
(``grading.bug_groups``), so that fewer submissions are graded; in each, the exercises
without a bug must keep full marks.
"""

import textwrap

from grading import ROOT, GraderSessionTests, blocks_notebook, bug_groups, grouped, patch_once, reference, without

SLUG = "ch04_cnn"
REF = reference(SLUG)
EXERCISES = ["BatchNorm2d", "BatchNormFunction", "make_cnn", "evaluate"]


# A correct submission written differently: own BN inside make_cnn, staged backward, other names.
ALT_BN = textwrap.dedent('''
    class BatchNorm2d(nn.Module):
        def __init__(self, num_features, eps=1e-5, momentum=0.1):
            super().__init__()
            self.eps = eps
            self.momentum = momentum
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

        def forward(self, x):
            g = self.weight[None, :, None, None]
            b = self.bias[None, :, None, None]
            if self.training:
                mu = x.mean(dim=(0, 2, 3), keepdim=True)
                var = ((x - mu) ** 2).mean(dim=(0, 2, 3), keepdim=True)
                with torch.no_grad():
                    self.running_mean.mul_(1 - self.momentum).add_(self.momentum * x.mean(dim=(0, 2, 3)))
                    self.running_var.mul_(1 - self.momentum).add_(self.momentum * x.var(dim=(0, 2, 3), unbiased=True))
                    self.num_batches_tracked += 1
            else:
                mu = self.running_mean[None, :, None, None]
                var = self.running_var[None, :, None, None]
            return g * (x - mu) / torch.sqrt(var + self.eps) + b
''')

ALT_REST = textwrap.dedent('''
    class BatchNormFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, gamma, beta, eps):
            m = x.shape[0] * x.shape[2] * x.shape[3]
            mu = x.sum(dim=(0, 2, 3), keepdim=True) / m
            xc = x - mu
            var = (xc * xc).sum(dim=(0, 2, 3), keepdim=True) / m
            std = torch.sqrt(var + eps)
            ctx.save_for_backward(xc, std, gamma)
            return xc / std * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)

        @staticmethod
        def backward(ctx, dout):
            xc, std, gamma = ctx.saved_tensors
            xhat = xc / std
            dbeta = dout.sum(dim=(0, 2, 3))
            dgamma = (dout * xhat).sum(dim=(0, 2, 3))
            dxhat = dout * gamma.view(1, -1, 1, 1)
            dx = (dxhat - dxhat.mean(dim=(0, 2, 3), keepdim=True)
                  - xhat * (dxhat * xhat).mean(dim=(0, 2, 3), keepdim=True)) / std
            return dx, dgamma, dbeta, None


    def make_cnn(use_bn, num_classes=10, in_channels=1, width=32):
        def block(cin, cout):
            layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=not use_bn)]
            if use_bn:
                layers.append(BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
            return layers
        return nn.Sequential(
            *block(in_channels, width), *block(width, width), nn.MaxPool2d(2),
            *block(width, 2 * width), *block(2 * width, 2 * width), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * 49, num_classes))


    def evaluate(model, X, y, batch_size=1000):
        was_training = model.training
        model.eval()
        hits = 0
        try:
            with torch.no_grad():
                for i in range(0, len(X), batch_size):
                    logits = model(X[i:i + batch_size])
                    hits += (logits.argmax(dim=1) == y[i:i + batch_size]).sum().item()
        finally:
            model.train(was_training)
        return hits / len(X)
''')

HEADER = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"
ALTERNATIVE = HEADER + ALT_BN + ALT_REST


def alt_bn(*pairs):
    """The alternative BatchNorm2d with replacements, to append after the reference."""
    source = ALT_BN
    for old, new in pairs:
        source = patch_once(old, new, source)
    return source


CORRECT = {
    "reference.py": REF,
    "alternative.py": ALTERNATIVE,
    # A notebook: imports with a magic, one cell per definition, and a graded test cell to skip.
    "alternative.ipynb": blocks_notebook("# Chapter 4 exercises", ALTERNATIVE),
}

# name: (exercise, how to make it from a source, a phrase its feedback must contain)
# "patch": replacements in the reference; "append": code appended after the reference.
BUGS = {
    # BatchNorm2d
    "bn_unbiased": ("BatchNorm2d", {"patch": [("var = x.var(dim=(0, 2, 3), correction=0)  # biased",
                                                "var = x.var(dim=(0, 2, 3), correction=1)  # biased")]},
                    "unbiased variance"),
    "bn_biased_running_var": ("BatchNorm2d", {"patch": [("unbiased_var = var.detach() * (count / (count - 1))",
                                                          "unbiased_var = var.detach()")]},
                              "running_var updated with the biased batch variance"),
    "bn_reversed_momentum": ("BatchNorm2d", {"patch": [
        ("self.running_mean.mul_(1.0 - factor).add_(factor * mean", "self.running_mean.mul_(factor).add_((1.0 - factor) * mean"),
        ("self.running_var.mul_(1.0 - factor).add_(factor * unbiased", "self.running_var.mul_(factor).add_((1.0 - factor) * unbiased")]},
        "the CS231n convention"),
    "bn_eps_outside": ("BatchNorm2d", {"patch": [("torch.sqrt(var.reshape(shape) + self.eps)",
                                                   "(torch.sqrt(var.reshape(shape)) + self.eps)")]},
                       "eps outside the square root"),
    "bn_per_position": ("BatchNorm2d", {"append": alt_bn(
        ("mu = x.mean(dim=(0, 2, 3), keepdim=True)", "mu = x.mean(dim=0, keepdim=True)"),
        ("var = ((x - mu) ** 2).mean(dim=(0, 2, 3), keepdim=True)", "var = ((x - mu) ** 2).mean(dim=0, keepdim=True)"))},
        "every channel *and position*"),
    "bn_per_sample": ("BatchNorm2d", {"append": alt_bn(
        ("mu = x.mean(dim=(0, 2, 3), keepdim=True)", "mu = x.mean(dim=(1, 2, 3), keepdim=True)"),
        ("var = ((x - mu) ** 2).mean(dim=(0, 2, 3), keepdim=True)", "var = ((x - mu) ** 2).mean(dim=(1, 2, 3), keepdim=True)"))},
        "statistics per sample"),
    "bn_reshape_no_transpose": ("BatchNorm2d", {"append": alt_bn(
        ("mu = x.mean(dim=(0, 2, 3), keepdim=True)",
         "flat = x.reshape(-1, x.shape[1])\n            mu = flat.mean(0)[None, :, None, None]"),
        ("var = ((x - mu) ** 2).mean(dim=(0, 2, 3), keepdim=True)", "var = flat.var(0, unbiased=False)[None, :, None, None]"),
        ("return g * (x - mu) / torch.sqrt(var + self.eps) + b",
         "if self.training:\n            x_hat = (flat - mu.flatten()) / torch.sqrt(var.flatten() + self.eps)\n"
         "            return g * x_hat.reshape(x.shape) + b\n"
         "        return g * (x - mu) / torch.sqrt(var + self.eps) + b"))},
        "x.reshape(-1, C) without moving the channel axis"),
    "bn_no_affine": ("BatchNorm2d", {"append": alt_bn(("return g * (x - mu) / torch.sqrt(var + self.eps) + b",
                                                       "return (x - mu) / torch.sqrt(var + self.eps)"))},
                     "without weight and bias"),
    "bn_detached_statistics": ("BatchNorm2d", {"append": alt_bn(
        ("mu = x.mean(dim=(0, 2, 3), keepdim=True)", "mu = x.mean(dim=(0, 2, 3), keepdim=True).detach()"),
        ("var = ((x - mu) ** 2).mean(dim=(0, 2, 3), keepdim=True)",
         "var = ((x - mu) ** 2).mean(dim=(0, 2, 3), keepdim=True).detach()"))},
        "detached from the graph"),
    "bn_no_running_update": ("BatchNorm2d", {"append": alt_bn(
        ("self.running_mean.mul_(1 - self.momentum).add_(self.momentum * x.mean(dim=(0, 2, 3)))", "pass"),
        ("self.running_var.mul_(1 - self.momentum).add_(self.momentum * x.var(dim=(0, 2, 3), unbiased=True))", "pass"))},
        "never updated"),
    "bn_num_batches_not_incremented": ("BatchNorm2d", {"append": alt_bn(("self.num_batches_tracked += 1", "pass"))},
                                       "num_batches_tracked is not incremented"),
    "bn_batch_stats_in_eval": ("BatchNorm2d", {"append": alt_bn(
        ("mu = self.running_mean[None, :, None, None]", "mu = x.mean(dim=(0, 2, 3), keepdim=True)"),
        ("var = self.running_var[None, :, None, None]", "var = ((x - mu) ** 2).mean(dim=(0, 2, 3), keepdim=True)"))},
        "statistics of the batch itself"),
    "bn_plain_attributes": ("BatchNorm2d", {"append": alt_bn(
        ('self.register_buffer("running_mean", torch.zeros(num_features))', "self.running_mean = torch.zeros(num_features)"),
        ('self.register_buffer("running_var", torch.ones(num_features))', "self.running_var = torch.ones(num_features)"))},
        "state_dict keys are"),
    "bn_wraps_f_batch_norm": ("BatchNorm2d", {"append": textwrap.dedent('''
        import torch.nn.functional as F


        class BatchNorm2d(nn.BatchNorm2d):
            def forward(self, x):
                if self.training:
                    self.num_batches_tracked += 1
                return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                    self.training, self.momentum, self.eps)
    ''')}, "calls PyTorch's batch norm"),
    # BatchNormFunction
    "fn_dropped_paths": ("BatchNormFunction", {"patch": [("M * dout - dbeta.reshape(shape) - x_hat * dgamma.reshape(shape)",
                                                           "M * dout")]},
                         "paths through the batch mean and variance are missing"),
    "fn_dparams_mean": ("BatchNormFunction", {"patch": [("return dx, dgamma, dbeta, None",
                                                          "return dx, dgamma / M, dbeta / M, None")]},
                        "divided by the number of values per channel"),
    "fn_unbiased": ("BatchNormFunction", {"patch": [("var = x.var(dim=(0, 2, 3), correction=0, keepdim=True)",
                                                      "var = x.var(dim=(0, 2, 3), keepdim=True)")]},
                    "unbiased variance"),
    "fn_dropped_var_path": ("BatchNormFunction", {"patch": [("M * dout - dbeta.reshape(shape) - x_hat * dgamma.reshape(shape)",
                                                              "M * dout - dbeta.reshape(shape)")]},
                            "without the path through the variance"),
    "fn_dparams_batch": ("BatchNormFunction", {"patch": [("return dx, dgamma, dbeta, None",
                                                           "return dx, dgamma / dout.shape[0], dbeta / dout.shape[0], None")]},
                         "divided by the batch size N"),
    "fn_modifies_input": ("BatchNormFunction", {"patch": [("x_hat = (x - mean) * inv_std",
                                                            "x.sub_(mean)\n        x_hat = x * inv_std")]},
                          "modified its input x in place"),
    "fn_autograd_in_backward": ("BatchNormFunction", {"append": textwrap.dedent('''
        class BatchNormFunction(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, gamma, beta, eps):
                ctx.save_for_backward(x, gamma, beta)
                ctx.eps = eps
                return BatchNormFunction._f(x, gamma, beta, eps)

            @staticmethod
            def _f(x, gamma, beta, eps):
                mean = x.mean(dim=(0, 2, 3), keepdim=True)
                var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
                return gamma.view(1, -1, 1, 1) * (x - mean) / torch.sqrt(var + eps) + beta.view(1, -1, 1, 1)

            @staticmethod
            def backward(ctx, dout):
                x, gamma, beta = (t.detach().requires_grad_(True) for t in ctx.saved_tensors)
                with torch.enable_grad():
                    out = BatchNormFunction._f(x, gamma, beta, ctx.eps)
                    dx, dgamma, dbeta = torch.autograd.grad(out, (x, gamma, beta), dout)
                return dx, dgamma, dbeta, None
    ''')}, "your backward calls autograd"),
    # make_cnn
    "cnn_bias_with_bn": ("make_cnn", {"patch": [("bias=not use_bn))", "bias=True))")]}, "should have bias=False"),
    "cnn_bn_after_relu": ("make_cnn", {"patch": [(
        "        if use_bn:\n            layers.append(nn.BatchNorm2d(c_out))\n        layers.append(nn.ReLU())",
        "        layers.append(nn.ReLU())\n        if use_bn:\n            layers.append(nn.BatchNorm2d(c_out))")]},
        "expected BatchNorm then ReLU"),
    "cnn_fixed_width": ("make_cnn", {"patch": [("channels = [(in_channels, width), (width, width), (width, 2 * width), (2 * width, 2 * width)]",
                                                "width = 32\n    channels = [(in_channels, width), (width, width), (width, 2 * width), (2 * width, 2 * width)]")]},
                        "output channels"),
    "cnn_other_architecture": ("make_cnn", {"patch": [("kernel_size=3, padding=1", "kernel_size=5, padding=2")]},
                               "the chapter's network has"),
    # evaluate
    "eval_no_eval_mode": ("evaluate", {"patch": [("    model.eval()\n    try:", "    try:")]}, "training mode"),
    "eval_no_no_grad": ("evaluate", {"patch": [("        with torch.no_grad():\n            for start",
                                                "        if True:\n            for start")]}, "torch.no_grad()"),
    "eval_mode_not_restored": ("evaluate", {"patch": [("            module.training = mode", "            pass")]},
                               "restore it"),
    "eval_count": ("evaluate", {"patch": [("return correct / X.shape[0]", "return float(correct)")]},
                   "number of correct predictions"),
    "eval_mean_of_batches": ("evaluate", {"append": textwrap.dedent('''
        def evaluate(model, X, y, batch_size=1000):
            was = model.training
            model.eval()
            accs = []
            with torch.no_grad():
                for i in range(0, len(X), batch_size):
                    accs.append((model(X[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).float().mean().item())
            model.train(was)
            return sum(accs) / len(accs)
    ''')}, "mean of the per-batch accuracies"),
}


# Submissions holding one bug of each exercise at most.
GROUPS = bug_groups({name: exercise for name, (exercise, _, _) in BUGS.items()})
MISSING = "make_cnn"


class TestGrader(GraderSessionTests):
    slug, exercises, correct = SLUG, EXERCISES, CORRECT
    sources, mistakes = grouped(REF, BUGS, GROUPS)
    missing = {"missing.py": (MISSING, without(REF, MISSING))}


def test_sandbox_ops_hold_no_reference():
    """The ops module is copied into the sandbox: no reference code may be in it."""
    ops = (ROOT / "autograder" / "ops" / "torch_models.py").read_text()
    for forbidden in ("solutions", "mistakes", "correction=0", "unbiased=False", "var(", "sqrt("):
        assert forbidden not in ops, forbidden

