"""``add_dualalign_config``: the one place where dualalign's config keys are declared.

Every key carries a one-line comment with its meaning and unit. Where the paper (Chai et al.,
ISBI 2022, section 2.3) fixes a hyper-parameter, its value is the default; README's "Config
keys" table lists both side by side. ``validate_dualalign_config`` refuses impossible values at
start-up with the key, the value and the allowed range.
"""

from detectron2.config import CfgNode as CN

METHODS = ("supervised", "dualalign", "csd", "mean_teacher")
PSEUDO_SOURCES = ("student", "teacher")
READ_ERROR_MODES = ("skip", "strict")


def add_dualalign_config(cfg):
    """Add all dualalign keys to a detectron2 ``cfg`` in place (idempotent)."""
    if hasattr(cfg, "DUALALIGN"):
        return
    _C = cfg
    _C.DUALALIGN = CN()
    # Training method: one of METHODS. "supervised" ignores the unlabelled data.
    _C.DUALALIGN.METHOD = "dualalign"
    # lambda(t) of Eq. 9: w_max, the weight reached after the ramp-up (unitless).
    _C.DUALALIGN.LOSS_WEIGHT = 1.0
    # lambda(t) of Eq. 9: T, the sigmoid ramp-up length in iterations (0 = no ramp).
    _C.DUALALIGN.RAMPUP_ITERS = 2000
    # Opt-in, not in the paper: a Gaussian ramp-down of lambda(t) (CSD's shape) over this many
    # iterations, ending DUALALIGN.TAIL_ITERS before SOLVER.MAX_ITER (0 = none, the paper).
    _C.DUALALIGN.RAMPDOWN_ITERS = 0
    # Supervised-only tail: the ramp-down ends this many iterations before SOLVER.MAX_ITER and
    # lambda(t) stays at its floor (LOSS_WEIGHT * exp(-12.5)) over them; needs RAMPDOWN_ITERS.
    _C.DUALALIGN.TAIL_ITERS = 0

    # Which of the four metric terms of Eq. 9 are on (Table 2's ablations are config changes).
    _C.DUALALIGN.LOSS = CN()
    _C.DUALALIGN.LOSS.PML_LABELED = True  # L_pml, Eq. 2
    _C.DUALALIGN.LOSS.PML_UNLABELED = True  # L'_pml, Eq. 3
    _C.DUALALIGN.LOSS.PMB_LABELED = True  # L_pmb, Eq. 7
    _C.DUALALIGN.LOSS.PMB_UNLABELED = True  # L'_pmb, Eq. 8

    # Projection head of Eq. 1: x = W2 relu(W1 H).
    _C.DUALALIGN.EMBED = CN()
    _C.DUALALIGN.EMBED.HIDDEN_DIM = 512  # output size of W1 (channels)
    _C.DUALALIGN.EMBED.DIM = 128  # output size of W2, the metric-space dimension D
    _C.DUALALIGN.EMBED.NORMALIZE = True  # L2-normalise embeddings and proxies (METHOD_NOTES)
    # Scale of the metric terms' gradient where it enters the box-head features H, which box
    # regression reads too (1 = the paper; 0 = the metric terms train the projection head only).
    _C.DUALALIGN.EMBED.GRAD_SCALE = 1.0

    # Class proxies p_c of Eq. 2-3.
    _C.DUALALIGN.PROXY = CN()
    _C.DUALALIGN.PROXY.BASE_LR = 0.01  # SGD learning rate of the proxies' param group (paper)
    _C.DUALALIGN.PROXY.INCLUDE_BACKGROUND = False  # add a background proxy (needed when C == 1)
    # Tempered proxy loss (ProxyNCA++-style); the defaults are Eq. 2 as printed.
    _C.DUALALIGN.PROXY.TEMPERATURE = 1.0  # distances are divided by this (> 0)
    _C.DUALALIGN.PROXY.SQUARED_DISTANCE = False  # Phi^2 instead of Phi in Eq. 2-3
    _C.DUALALIGN.PROXY.INCLUDE_POSITIVE = False  # the positive proxy also in the denominator

    # Pseudo labels of unlabelled proposals (Eq. 3, 4).
    _C.DUALALIGN.PSEUDO = CN()
    _C.DUALALIGN.PSEUDO.SCORE_THRESH = 0.5  # keep a proposal when its max fg softmax > this (paper)
    # Unlabelled proposals per image fed to the box head, highest objectness first.
    _C.DUALALIGN.PSEUDO.PROPOSALS_PER_IMAGE = 512
    # Who labels the unlabelled proposals: "student" (this forward's classifier, Eq. 3 as
    # printed) or "teacher" (an EMA teacher, DUALALIGN.TEACHER.*, on the weak view).
    _C.DUALALIGN.PSEUDO.SOURCE = "student"
    # Teacher detections (after NMS) above BOX_THRESH become pseudo-boxes, and the unlabelled
    # proposals are sampled against them by IoU like labelled ones (needs SOURCE "teacher").
    _C.DUALALIGN.PSEUDO.BOXES = False
    _C.DUALALIGN.PSEUDO.BOX_THRESH = 0.7  # teacher score above which a detection is a box
    # One box threshold per class (class-index order), replacing BOX_THRESH when not empty; a
    # class at 1.0 gives no pseudo-box (its detections above IGNORE_THRESH are ignore regions).
    _C.DUALALIGN.PSEUDO.BOX_THRESH_PER_CLASS = []
    # One threshold per class (class-index order) on the score of the pseudo-box an unlabelled
    # foreground proposal matched, for the metric terms only (L'_pml, L'_pmb): a row at or below
    # its class's value still gets loss_cls_u / loss_box_reg_u. [] = every pseudo-box's rows;
    # a class at 1.0 has no unlabelled metric row (needs BOXES).
    _C.DUALALIGN.PSEUDO.METRIC_THRESH_PER_CLASS = []
    # Teacher detections scored in (IGNORE_THRESH, BOX_THRESH] are ignore regions: a proposal
    # matched to one is neither foreground nor background. >= BOX_THRESH: none (default).
    _C.DUALALIGN.PSEUDO.IGNORE_THRESH = 1.0
    # The teacher labels the weak view and its left-right mirror, and the two views' detections
    # are fused (a box both find: the score-weighted mean box, the mean score; a box one view
    # finds: half its score) before BOX_THRESH / IGNORE_THRESH (needs BOXES). Inference and the
    # student's views are unchanged.
    _C.DUALALIGN.PSEUDO.FLIP_FUSION = False
    # Classification loss loss_cls_u on the proposals sampled against pseudo-boxes (needs
    # BOXES); weighted by lambda(t) like the metric terms.
    _C.DUALALIGN.PSEUDO.CLS_LOSS = False
    # loss_cls_u's target of an unlabelled proposal sampled as background is the teacher's
    # softmax of its box (one-hot background otherwise); foreground rows keep their pseudo-box's
    # class (needs CLS_LOSS). Pair with IGNORE_THRESH 1.0: an object the teacher is unsure of
    # is then trained towards the teacher's belief instead of background or nothing.
    _C.DUALALIGN.PSEUDO.SOFT_BACKGROUND = False
    # The RPN's objectness and box-regression losses on the unlabelled images against their
    # pseudo-boxes, class-agnostic (loss_rpn_cls_u, loss_rpn_loc_u; anchors on ignore regions
    # left out); weighted by lambda(t) like loss_cls_u (needs BOXES).
    _C.DUALALIGN.PSEUDO.RPN_LOSS = False
    # Box-regression loss loss_box_reg_u of the ROI heads on the unlabelled proposals sampled
    # as foreground, towards their matched pseudo-box; weighted by lambda(t) (needs BOXES).
    _C.DUALALIGN.PSEUDO.BOX_REG_LOSS = False

    # Prototype alignment, Eq. 5-8.
    _C.DUALALIGN.PROTO = CN()
    _C.DUALALIGN.PROTO.MARGIN = 1.0  # m of Eq. 6, in metric-space distance units (paper)

    # Memory bank of labelled prototypes P_M.
    _C.DUALALIGN.MEMORY = CN()
    _C.DUALALIGN.MEMORY.SIZE = 1024  # capacity in prototype rows (paper)

    # Unlabelled images per step over all workers; -1 = SOLVER.IMS_PER_BATCH (equal sampling).
    _C.DUALALIGN.UNLABELED_IMS_PER_BATCH = -1

    # Datasets declared in the config (registered by dualalign.data.register_from_config).
    _C.DUALALIGN.DATASETS = CN()
    # Labelled COCO sets: list of [name, json_path, image_root].
    _C.DUALALIGN.DATASETS.COCO = []
    # Unlabelled sets: list of [name, source] or [name, source, image_root]; source is a folder
    # of images, a COCO json (annotations ignored) or a .txt file with one image path per line.
    _C.DUALALIGN.DATASETS.UNLABELED = []
    # Names of the unlabelled sets to train on (the labelled ones are DATASETS.TRAIN).
    _C.DUALALIGN.DATASETS.TRAIN_UNLABELED = ()
    # Fraction of the labelled training images kept (0 < f <= 1); the rest is unused.
    _C.DUALALIGN.DATASETS.LABELED_FRACTION = 1.0
    # Seed of the labelled-fraction draw.
    _C.DUALALIGN.DATASETS.SPLIT_SEED = 0
    # Image field that groups images (patient/slide); a group never spans two splits.
    _C.DUALALIGN.DATASETS.GROUP_KEY = "patient_id"
    # Where the chosen image ids are written ("" = OUTPUT_DIR/labeled_split.json).
    _C.DUALALIGN.DATASETS.SPLIT_FILE = ""
    # Also train on the unselected labelled images as unlabelled data (annotations dropped).
    _C.DUALALIGN.DATASETS.REMAINDER_AS_UNLABELED = False
    # Unreadable unlabelled image during training: "skip" (warn and count) or "strict" (stop).
    _C.DUALALIGN.DATASETS.READ_ERRORS = "skip"

    # Training-time augmentation (applied to labelled and unlabelled images alike).
    _C.DUALALIGN.AUG = CN()
    _C.DUALALIGN.AUG.HFLIP_PROB = 0.5  # probability of a horizontal flip
    _C.DUALALIGN.AUG.VFLIP_PROB = 0.5  # probability of a vertical flip
    _C.DUALALIGN.AUG.BRIGHTNESS = 0.2  # intensity scale drawn from [1 - b, 1 + b]
    _C.DUALALIGN.AUG.CONTRAST = 0.2  # contrast scale drawn from [1 - c, 1 + c]
    _C.DUALALIGN.AUG.SATURATION = 0.2  # saturation scale drawn from [1 - s, 1 + s]
    _C.DUALALIGN.AUG.HUE = 0.02  # hue shift drawn from [-h, h], in fractions of a full turn

    # The student's strong view of the unlabelled images (teacher pipeline; geometry unchanged).
    _C.DUALALIGN.STRONG_AUG = CN()
    _C.DUALALIGN.STRONG_AUG.ENABLED = False  # needs DUALALIGN.PSEUDO.SOURCE "teacher"
    _C.DUALALIGN.STRONG_AUG.BRIGHTNESS = 0.4  # intensity scale drawn from [1 - b, 1 + b]
    _C.DUALALIGN.STRONG_AUG.CONTRAST = 0.4  # contrast scale drawn from [1 - c, 1 + c]
    _C.DUALALIGN.STRONG_AUG.SATURATION = 0.4  # saturation blend drawn from [1 - s, 1 + s]
    _C.DUALALIGN.STRONG_AUG.BLUR_PROB = 0.5  # probability of a Gaussian blur
    _C.DUALALIGN.STRONG_AUG.BLUR_SIGMA = 2.0  # its sigma drawn from [0.1, this], in pixels
    _C.DUALALIGN.STRONG_AUG.CUTOUT_NUM = 3  # rectangles filled with the image mean
    _C.DUALALIGN.STRONG_AUG.CUTOUT_FRAC = 0.15  # their side, as a fraction of the image side

    # Evaluation: COCO-style AP averaged over this IoU grid (the paper's AP10..AP70).
    _C.DUALALIGN.EVAL = CN()
    _C.DUALALIGN.EVAL.IOU_THRESHOLDS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    # Periodic evaluation (TEST.EVAL_PERIOD) starts at this iteration (0: from the start); the
    # evaluation after training always runs.
    _C.DUALALIGN.EVAL.START_ITER = 0

    # Iterations between writes of metrics.json, TensorBoard events and the console log.
    _C.DUALALIGN.LOG_PERIOD = 20

    # Diagnostics logged during training.
    _C.DUALALIGN.DIAGNOSTICS = CN()
    # Every this many iterations, log grad/<part>/unsup_over_sup: the norm of the weighted
    # unsupervised terms' gradient over the supervised loss's, at the box head and the last
    # backbone stage (two extra backward passes; single-process runs; 0 = off).
    _C.DUALALIGN.DIAGNOSTICS.GRAD_SHARE_PERIOD = 0
    # A registered labelled set holding the unlabelled pool's hidden truth (synthetic data:
    # unlabeled_with_gt.json); when set, pseudo-label precision / recall per class are logged
    # every PSEUDO_PERIOD iterations (0: at the end only). Training never reads it.
    _C.DUALALIGN.DIAGNOSTICS.PSEUDO_DATASET = ""
    _C.DUALALIGN.DIAGNOSTICS.PSEUDO_PERIOD = 0
    # An upper bound, never a method: the unlabelled images' own annotations replace the
    # teacher's pseudo-boxes (score 1; needs PSEUDO.BOXES and a truth set, e.g. the synthetic
    # pool's unlabeled_with_gt.json registered through DATASETS.COCO, in
    # DATASETS.TRAIN_UNLABELED). Everything else (losses, views, sampling) is the method's.
    _C.DUALALIGN.DIAGNOSTICS.ORACLE_PSEUDO_BOXES = False
    # The oracle's recall: each true box is kept with this probability (the same boxes of an
    # image every time); below 1 the oracle is a labeller that is always right but finds only
    # that share of the cells, e.g. the teacher's recall (about 0.47 on the synthetic pool).
    _C.DUALALIGN.DIAGNOSTICS.ORACLE_RECALL = 1.0

    # Fault handling during training.
    _C.DUALALIGN.SOLVER = CN()
    # Non-finite loss steps that are skipped (no update) before the run stops.
    _C.DUALALIGN.SOLVER.MAX_BAD_STEPS = 0

    # CSD baseline (Jeong et al., NeurIPS 2019).
    _C.DUALALIGN.CSD = CN()
    _C.DUALALIGN.CSD.WEIGHT = 1.0  # maximum consistency weight (CSD paper)
    _C.DUALALIGN.CSD.RAMPUP_ITERS = 2000  # Gaussian ramp-up length in iterations
    _C.DUALALIGN.CSD.RAMPDOWN_ITERS = 2000  # Gaussian ramp-down length before MAX_ITER
    # Supervised-only tail: the ramp-down ends this many iterations before SOLVER.MAX_ITER and
    # the weight stays at its floor (WEIGHT * exp(-12.5)) over them; 0 = CSD's own schedule.
    _C.DUALALIGN.CSD.TAIL_ITERS = 0
    # Background elimination: keep proposals whose max foreground probability exceeds this.
    _C.DUALALIGN.CSD.BG_THRESH = 0.5

    # Mean Teacher baseline (Tarvainen & Valpola, 2017).
    _C.DUALALIGN.MEAN_TEACHER = CN()
    _C.DUALALIGN.MEAN_TEACHER.WEIGHT = 1.0  # maximum consistency weight
    # Sigmoid ramp-up length in iterations, counted from DUALALIGN.TEACHER.START_ITER.
    _C.DUALALIGN.MEAN_TEACHER.RAMPUP_ITERS = 2000

    # EMA teacher of the teacher-based methods (Mean Teacher; dual alignment with
    # DUALALIGN.PSEUDO.SOURCE "teacher").
    _C.DUALALIGN.TEACHER = CN()
    # Iteration at which the teacher becomes a copy of the student (0: of the network as built
    # and loaded, e.g. the MODEL.WEIGHTS checkpoint); before it no unsupervised term, no EMA.
    _C.DUALALIGN.TEACHER.START_ITER = 0
    _C.DUALALIGN.TEACHER.EMA_DECAY = 0.999  # teacher = decay * teacher + (1 - decay) * student
    _C.DUALALIGN.TEACHER.EVAL_TEACHER = True  # evaluate the teacher (False: the student)
    # Inference (--eval-only, the eval hook) returns what the teacher labels the images with,
    # its pseudo-label detections (DUALALIGN.PSEUDO.FLIP_FUSION included), not its own
    # inference: for choosing pseudo-box thresholds on val (scripts/pseudo_thresholds.py) on the
    # scores the thresholds will read. Needs a teacher; never a model's score.
    _C.DUALALIGN.TEACHER.EVAL_PSEUDO_LABELS = False


def _fail(key, value, allowed):
    raise ValueError(f"config error: {key} = {value!r}; allowed: {allowed}")


def _schedule_checks(prefix, node, max_iter):
    """The checks of one lambda(t) schedule's lengths (``RAMPUP_ITERS``, ``RAMPDOWN_ITERS``,
    ``TAIL_ITERS`` under ``prefix``: dual alignment's own, or CSD's)."""
    tail_ok = 0 <= node.TAIL_ITERS < max(max_iter, 1) and (
        node.TAIL_ITERS == 0 or node.RAMPDOWN_ITERS > 0
    )
    return [
        (f"{prefix}.RAMPUP_ITERS", node.RAMPUP_ITERS, node.RAMPUP_ITERS >= 0, ">= 0"),
        (f"{prefix}.RAMPDOWN_ITERS", node.RAMPDOWN_ITERS, node.RAMPDOWN_ITERS >= 0, ">= 0"),
        (
            f"{prefix}.TAIL_ITERS",
            node.TAIL_ITERS,
            tail_ok,
            f"0 <= value < SOLVER.MAX_ITER, and 0 unless {prefix}.RAMPDOWN_ITERS > 0 (a tail "
            "without a ramp-down changes nothing)",
        ),
    ]


def _per_class_check(key: str, values, d, num_classes: int) -> tuple:
    """The check of a per-class pseudo-box threshold list (empty, or one value in [0, 1] per
    class, with DUALALIGN.PSEUDO.BOXES)."""
    ok = not values or (
        d.PSEUDO.BOXES and len(values) == num_classes and all(0 <= t <= 1 for t in values)
    )
    return (
        key,
        list(values),
        ok,
        f"[] or MODEL.ROI_HEADS.NUM_CLASSES ({num_classes}) values in [0, 1], with "
        "DUALALIGN.PSEUDO.BOXES True",
    )


def validate_dualalign_config(cfg):
    """Refuse impossible settings before anything is built (raise ``ValueError``)."""
    d = cfg.DUALALIGN
    if d.METHOD not in METHODS:
        _fail("DUALALIGN.METHOD", d.METHOD, " | ".join(METHODS))
    per_class = d.PSEUDO.BOX_THRESH_PER_CLASS
    metric = d.PSEUDO.METRIC_THRESH_PER_CLASS
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    checks = [
        ("DUALALIGN.LOSS_WEIGHT", d.LOSS_WEIGHT, d.LOSS_WEIGHT >= 0, ">= 0"),
        *_schedule_checks("DUALALIGN", d, cfg.SOLVER.MAX_ITER),
        *_schedule_checks("DUALALIGN.CSD", d.CSD, cfg.SOLVER.MAX_ITER),
        ("DUALALIGN.EMBED.HIDDEN_DIM", d.EMBED.HIDDEN_DIM, d.EMBED.HIDDEN_DIM > 0, "> 0"),
        ("DUALALIGN.EMBED.DIM", d.EMBED.DIM, d.EMBED.DIM > 0, "> 0"),
        ("DUALALIGN.PROXY.BASE_LR", d.PROXY.BASE_LR, d.PROXY.BASE_LR >= 0, ">= 0"),
        ("DUALALIGN.PROXY.TEMPERATURE", d.PROXY.TEMPERATURE, d.PROXY.TEMPERATURE > 0, "> 0"),
        (
            "DUALALIGN.PSEUDO.SCORE_THRESH",
            d.PSEUDO.SCORE_THRESH,
            0 <= d.PSEUDO.SCORE_THRESH < 1,
            "0 <= value < 1",
        ),
        (
            "DUALALIGN.PSEUDO.PROPOSALS_PER_IMAGE",
            d.PSEUDO.PROPOSALS_PER_IMAGE,
            d.PSEUDO.PROPOSALS_PER_IMAGE > 0,
            "> 0",
        ),
        (
            "DUALALIGN.PSEUDO.SOURCE",
            d.PSEUDO.SOURCE,
            d.PSEUDO.SOURCE in PSEUDO_SOURCES,
            " | ".join(PSEUDO_SOURCES),
        ),
        (
            "DUALALIGN.PSEUDO.BOXES",
            d.PSEUDO.BOXES,
            not d.PSEUDO.BOXES or d.PSEUDO.SOURCE == "teacher",
            "True only with DUALALIGN.PSEUDO.SOURCE teacher",
        ),
        (
            "DUALALIGN.PSEUDO.BOX_THRESH",
            d.PSEUDO.BOX_THRESH,
            0 <= d.PSEUDO.BOX_THRESH < 1,
            "0 <= value < 1",
        ),
        _per_class_check("DUALALIGN.PSEUDO.BOX_THRESH_PER_CLASS", per_class, d, num_classes),
        _per_class_check("DUALALIGN.PSEUDO.METRIC_THRESH_PER_CLASS", metric, d, num_classes),
        (
            "DUALALIGN.PSEUDO.IGNORE_THRESH",
            d.PSEUDO.IGNORE_THRESH,
            0 <= d.PSEUDO.IGNORE_THRESH <= 1
            and (d.PSEUDO.IGNORE_THRESH >= d.PSEUDO.BOX_THRESH or d.PSEUDO.BOXES),
            "0 <= value <= 1; below DUALALIGN.PSEUDO.BOX_THRESH only with DUALALIGN.PSEUDO.BOXES",
        ),
        *[  # switches that read pseudo-boxes
            (
                f"DUALALIGN.PSEUDO.{key}",
                d.PSEUDO[key],
                not d.PSEUDO[key] or d.PSEUDO.BOXES,
                "True only with DUALALIGN.PSEUDO.BOXES True",
            )
            for key in ("FLIP_FUSION", "CLS_LOSS", "BOX_REG_LOSS", "RPN_LOSS")
        ],
        (
            "DUALALIGN.PSEUDO.SOFT_BACKGROUND",
            d.PSEUDO.SOFT_BACKGROUND,
            not d.PSEUDO.SOFT_BACKGROUND or d.PSEUDO.CLS_LOSS,
            "True only with DUALALIGN.PSEUDO.CLS_LOSS True",
        ),
        (
            "DUALALIGN.STRONG_AUG.ENABLED",
            d.STRONG_AUG.ENABLED,
            not d.STRONG_AUG.ENABLED or d.PSEUDO.SOURCE == "teacher",
            "True only with DUALALIGN.PSEUDO.SOURCE teacher",
        ),
        (
            "TEST.PRECISE_BN.ENABLED",
            cfg.TEST.PRECISE_BN.ENABLED,
            not cfg.TEST.PRECISE_BN.ENABLED or d.METHOD == "supervised",
            "True only with DUALALIGN.METHOD supervised (its passes read labelled batches; the "
            "semi-supervised methods continue with frozen BN, MODEL.RESNETS.NORM FrozenBN)",
        ),
        ("DUALALIGN.EMBED.GRAD_SCALE", d.EMBED.GRAD_SCALE, d.EMBED.GRAD_SCALE >= 0, ">= 0"),
        ("DUALALIGN.PROTO.MARGIN", d.PROTO.MARGIN, d.PROTO.MARGIN > 0, "> 0"),
        ("DUALALIGN.MEMORY.SIZE", d.MEMORY.SIZE, d.MEMORY.SIZE > 0, "> 0 (rows)"),
        (
            "DUALALIGN.DATASETS.LABELED_FRACTION",
            d.DATASETS.LABELED_FRACTION,
            0 < d.DATASETS.LABELED_FRACTION <= 1,
            "0 < value <= 1",
        ),
        (
            "DUALALIGN.DATASETS.READ_ERRORS",
            d.DATASETS.READ_ERRORS,
            d.DATASETS.READ_ERRORS in READ_ERROR_MODES,
            " | ".join(READ_ERROR_MODES),
        ),
        ("DUALALIGN.LOG_PERIOD", d.LOG_PERIOD, d.LOG_PERIOD > 0, "> 0"),
        (
            "DUALALIGN.DIAGNOSTICS.GRAD_SHARE_PERIOD",
            d.DIAGNOSTICS.GRAD_SHARE_PERIOD,
            d.DIAGNOSTICS.GRAD_SHARE_PERIOD >= 0,
            ">= 0 (0 = off)",
        ),
        (
            "DUALALIGN.DIAGNOSTICS.PSEUDO_PERIOD",
            d.DIAGNOSTICS.PSEUDO_PERIOD,
            d.DIAGNOSTICS.PSEUDO_PERIOD >= 0,
            ">= 0 (0 = at the end)",
        ),
        (
            "DUALALIGN.DIAGNOSTICS.ORACLE_PSEUDO_BOXES",
            d.DIAGNOSTICS.ORACLE_PSEUDO_BOXES,
            not d.DIAGNOSTICS.ORACLE_PSEUDO_BOXES or d.PSEUDO.BOXES,
            "True only with DUALALIGN.PSEUDO.BOXES True",
        ),
        (
            "DUALALIGN.DIAGNOSTICS.ORACLE_RECALL",
            d.DIAGNOSTICS.ORACLE_RECALL,
            0 < d.DIAGNOSTICS.ORACLE_RECALL <= 1
            and (d.DIAGNOSTICS.ORACLE_RECALL == 1 or d.DIAGNOSTICS.ORACLE_PSEUDO_BOXES),
            "in (0, 1]; below 1 only with DUALALIGN.DIAGNOSTICS.ORACLE_PSEUDO_BOXES True",
        ),
        (
            "DUALALIGN.SOLVER.MAX_BAD_STEPS",
            d.SOLVER.MAX_BAD_STEPS,
            d.SOLVER.MAX_BAD_STEPS >= 0,
            ">= 0",
        ),
        (
            "DUALALIGN.TEACHER.EMA_DECAY",
            d.TEACHER.EMA_DECAY,
            0 <= d.TEACHER.EMA_DECAY < 1,
            "0 <= value < 1",
        ),
        ("DUALALIGN.TEACHER.START_ITER", d.TEACHER.START_ITER, d.TEACHER.START_ITER >= 0, ">= 0"),
        ("DUALALIGN.CSD.BG_THRESH", d.CSD.BG_THRESH, 0 <= d.CSD.BG_THRESH < 1, "0 <= value < 1"),
        (
            "MODEL.ROI_HEADS.NUM_CLASSES",
            cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            cfg.MODEL.ROI_HEADS.NUM_CLASSES >= 1,
            ">= 1",
        ),
    ]
    for key, value, ok, allowed in checks:
        if not ok:
            _fail(key, value, allowed)
    ious = list(d.EVAL.IOU_THRESHOLDS)
    if not ious or any(not (0 < t < 1) for t in ious):
        _fail("DUALALIGN.EVAL.IOU_THRESHOLDS", ious, "a non-empty list of values in (0, 1)")
    for i, entry in enumerate(d.DATASETS.COCO):
        if len(entry) != 3:
            _fail(f"DUALALIGN.DATASETS.COCO[{i}]", entry, "[name, json_path, image_root]")
    for i, entry in enumerate(d.DATASETS.UNLABELED):
        if len(entry) not in (2, 3):
            _fail(
                f"DUALALIGN.DATASETS.UNLABELED[{i}]",
                entry,
                "[name, source] or [name, source, image_root]",
            )
    if (
        d.METHOD == "dualalign"
        and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1
        and not d.PROXY.INCLUDE_BACKGROUND
        and (d.LOSS.PML_LABELED or d.LOSS.PML_UNLABELED)
    ):
        _fail(
            "DUALALIGN.PROXY.INCLUDE_BACKGROUND",
            False,
            "True when MODEL.ROI_HEADS.NUM_CLASSES == 1 (Eq. 2 needs a second proxy)",
        )
