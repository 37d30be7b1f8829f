"""What chapter 5's feedback says about each known mistake (``{identifier: explanation}``).

Texts only, no code: the public checks use them with fingerprints computed from public
information, the hidden tests with ``autograder.mistakes.ch05_covariate_shift``.
"""

MSG = {
    # ics_metrics
    "l2_squared": "It matches the squared distance ||G - G'||^2: take the square root (torch.linalg.norm).",
    "l2_mean": "It matches the root-mean-square difference: the l2 distance sums the squares, it does not "
               "average them.",
    "l2_relative": "It matches ||G - G'|| / ||G||: Santurkar et al.'s ICS is the plain distance ||G - G'||.",
    "cos_dot": "It matches the dot product <G, G'> without dividing by ||G|| ||G'||.",
    "cos_distance": "It matches 1 - cosine (the cosine distance); return the cosine similarity itself.",
    "cos_rows": "It matches the mean of row-wise cosines (F.cosine_similarity works along dim=1): flatten G and "
                "G' to vectors first.",
    "zero_nan": "A zero gradient gives nan: handle the zero vectors as the chapter says (both zero: cosine 1, "
                "one zero: cosine 0).",
    # measure_ics
    "ics_all": "It matches an SGD step on *all* layers, the measured one and the later ones included: "
               "Definition 2.1 moves only the layers *before* the measured one.",
    "ics_later_too": "It matches moving the later layers too (all layers but the measured one): only the "
                     "layers *before* the measured one take the SGD step.",
    "ics_self_too": "It matches moving the measured layer's weight too: G' is taken at the *same* W_i, only "
                    "the earlier layers move.",
    "ics_weights_only": "It matches moving only the weights of the earlier layers: their biases and the BN "
                        "parameters (gamma, beta) of the earlier blocks take the SGD step too.",
    "ics_ascent": "It matches a step *up* the gradient (w + lr * g): SGD subtracts, w - lr * g.",
    "ics_eval_mode": "It matches measuring in eval mode: run the passes in the model's current mode "
                     "(training mode here, where BN uses the batch statistics); do not call model.eval().",
    # landscape_along_gradient
    "ls_grad_norm": "It matches ||grad L(w_c)||: gradient predictiveness is the distance ||grad L(w_c) - g||.",
    "ls_beta_no_gnorm": "It matches dividing by c * lr: the ratio divides by the length of the step, "
                        "||c * lr * g||.",
    "ls_beta_mean": "It matches the mean of the ratios: the effective beta-smoothness is the maximum.",
    "ls_no_lr": "It matches steps of c * g without the learning rate: the step is c * lr * g.",
    "ls_ascent": "It matches steps up the gradient (w + c * lr * g): move along -g, w - c * lr * g.",
    "ls_delta": "It matches loss differences L(w_c) - L(w): report the losses L(w_c) themselves.",
    "ls_eval_mode": "It matches the landscape measured in eval mode: keep the model's current mode "
                    "(training mode here, BN with batch statistics); do not call model.eval().",
}
