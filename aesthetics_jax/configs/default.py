"""Default configuration: every key the library reads, with its default.

Variants (mobilenet_v2_emd.py, vgg16_binary.py, demo.py) start from `get_config()` here and
override. Any key can be overridden on the command line: `--config.optim.lr=1e-4`.
`apply_smoke(c)` (the `:smoke` config argument of every variant) shrinks everything for tests.
"""
import ml_collections

# config.model.arch: the models the library builds (every command and module that lists them
# reads this one tuple).
ARCHS = ('mobilenet_v2', 'vgg16')


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  # --- data -----------------------------------------------------------------
  c.data = ml_collections.ConfigDict()
  c.data.data_dir = ''          # TFDS data_dir written by launch/prepare_data.py
  c.data.ava_dir = ''           # AVA root (manual_dir); prepared on first use if set
  c.data.subset = 'style'       # 'style' | 'all'
  c.data.max_train_images = 0   # 0 = all; >0 truncates (smoke tests, scaling benchmarks)
  c.data.max_test_images = 0
  # Held out of the training split (per class, seeded by c.seed; data/validation.py) for the
  # periodic evaluations and the best checkpoint; test is evaluated once at the end. 0 = off
  # (then both use the test split, as the logs say). max_train_images limits the pool first.
  c.data.validation_fraction = 0.1

  # --- input pipeline --------------------------------------------------------
  c.input = ml_collections.ConfigDict()
  c.input.resize_size = 256     # train: resize to resize_size², random image_size² crop
  c.input.image_size = 224      # eval: resize to image_size²
  c.input.random_flip = False
  c.input.normalize = 'none'    # 'none' (paper: [0,1]) | 'imagenet' (mean/std)
  c.input.balanced = True       # weighted sampling with replacement, high/low equally often
  c.input.weighting = 'none'    # per-sample loss weights: 'none' | 'score' | 'class' (1/N_c;
                                # only with balanced=False: the balanced sampler is 1/N_c)
  c.input.weight_factor = 7.0   # 'score': weight for mean scores outside the band
  c.input.weight_band = (4.5, 6.5)
  c.input.num_workers = 0       # 0 = one per CPU core
  c.input.prefetch = 2          # batches decoded ahead
  # Training images decoded and resized once, kept in memory up to this many MB (0 = off):
  # later epochs only crop them. 256-px images take 192 KB each: 1024 MB holds 5,461.
  c.input.resized_cache_mb = 1024

  # --- model -----------------------------------------------------------------
  c.model = ml_collections.ConfigDict()
  c.model.arch = 'mobilenet_v2'   # 'mobilenet_v2' | 'vgg16'
  c.model.width_mult = 1.0        # MobileNetV2 width multiplier; VGG16 channel scale
  c.model.fc_dim = 4096           # VGG16 classifier width
  c.model.vgg_pool_size = 7       # VGG16 adaptive avg-pool size before fc6 (torch: 7; 2x2 maps replicate)
  c.model.num_buckets = 10
  c.model.num_tags = 66
  c.model.dropout = 0.5
  c.model.depthwise = 'auto'      # 'auto' (per backend) | 'conv' | 'shift'
  c.model.conv3x3 = 'auto'        # VGG16 convs: 'auto' (Winograd on CPU from 256 channels)
                                  # | 'direct' | 'winograd' (models/winograd.py)
  c.model.dtype = 'float32'       # compute dtype: 'float32' | 'bfloat16'
  c.model.freeze_encoder = True   # frozen ImageNet backbone (paper)
  c.model.init_weights = ''       # converted ImageNet weights (.npz/.safetensors/.pth), or
                                  # the convert_weights --out folder (<arch>.npz)

  # --- loss ------------------------------------------------------------------
  c.loss = ml_collections.ConfigDict()
  c.loss.emd_r = 2.0            # NIMA's r
  c.loss.tag_weight = 1.0       # weight of the attribute (tag) loss in the two-headed model

  # --- optimisation ------------------------------------------------------------
  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'adam'         # 'adam' | 'sgd'
  c.optim.lr = 3e-6
  c.optim.momentum = 0.9        # sgd
  c.optim.weight_decay = 0.0
  c.optim.schedule = 'constant' # 'constant' | 'cosine'
  c.optim.warmup_steps = 0
  c.optim.grad_clip = 0.0       # 0 = off

  c.batch_size = 32             # global, over all devices and hosts
  c.num_epochs = 50.0           # epochs of the (balanced) training split
  c.num_train_steps = 0         # >0 overrides num_epochs

  # --- frozen-encoder feature cache -----------------------------------------
  # Stores model.cache_features per view: MobileNetV2 the pooled [1280] vector (5 KiB in f32),
  # VGG16 the [7,7,512] map fc6 flattens (49 KiB in f16). Cost is printed at start.
  c.cache = ml_collections.ConfigDict()
  c.cache.enabled = True        # only used when model.freeze_encoder; False = online mode:
                                # the frozen encoder runs every step on fresh crops (no cache)
  c.cache.num_train_views = 4   # K augmented train views computed once
  # Storage dtype: 'auto' (float32 for pooled vectors, float16 for feature maps) | 'float32'
  # | 'float16' | 'bfloat16'.
  c.cache.dtype = 'auto'
  # Caches larger than this are memory-mapped from <workdir>/cache/ (reused on resume).
  c.cache.ram_budget_gb = 2.0
  # A RAM cache up to this size per device (CPU: summed over devices) is also held on the
  # devices, and the head steps between two logs / evaluations / checkpoints run in one call
  # (~3x faster for MobileNetV2's small head); 0 = one host-fed step per call.
  c.cache.device_budget_gb = 1.0

  # --- bookkeeping -----------------------------------------------------------
  c.log_every_steps = 50
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 2
  c.best_metric = 'binary_accuracy'   # kept as 'best' checkpoint (higher is better), on validation
  c.log_cam_images = 4          # Grad-CAM overlays in TensorBoard per evaluation (0 = off)

  # --- evaluation / CAM study ------------------------------------------------
  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 32
  c.eval.cam_method = 'gradcam'
  # CAM layers, torchvision module paths of model.features (pytorch-grad-cam's target_layers),
  # e.g. ('features.14', 'features.18') for MobileNetV2, ('features.22', 'features.29') for
  # VGG16; several are fused as pytorch-grad-cam does. () = the encoder's output (the last conv
  # block: features.18 / features.30), whose map is only S/32 pixels wide.
  c.eval.cam_layers = ()
  c.eval.cam_methods = ('gradcam', 'gradcampp', 'hirescam', 'xgradcam', 'layercam',
                        'eigencam', 'scorecam')
  c.eval.box_threshold = 0.2
  # <image_id>.png region masks for the pointing game / mask mass; '' = the demo's defect
  # masks recorded by prepare_data (real AVA has none).
  c.eval.masks_dir = ''
  c.eval.num_example_images = 6
  c.eval.bootstrap_samples = 1000
  c.eval.faithfulness_images = 64     # images used for deletion/insertion AUC
  # Images with a region mask for the pointing game / mask mass / box IoU (0 = all test images;
  # one vjp per batch and method, about one evaluation pass each).
  c.eval.localization_images = 0
  # With region masks, score two controls beside every localisation number, in the same pass
  # (about one more encoder pass over those images): the maps of the model training started
  # from, and the trained maps against another image's region.
  c.eval.localization_controls = True
  # Added by evaluate.py: training-split images whose maps fit the split-point threshold (the
  # first N of the split; 0 = all of them).
  c.eval.split_point_fit_images = 1024
  # Repeat the intensity study (Table 1) on the maps of the variables training started from:
  # one more pass over the test images and the split-point fit images. A correlation that
  # holds before training comes from the images, not from what the model learned.
  c.eval.intensity_untrained = True
  # Added by evaluate.py: deletion/insertion curve resolution (steps from 0 to all pixels).
  c.eval.faithfulness_steps = 16
  # ScoreCAM runs the model once per feature channel (MobileNetV2 at features.18: 1,280 full
  # forwards an image, ~20 s on a 2-core CPU), so it gets the first few images only, in the
  # faithfulness and localization studies alike.
  c.eval.faithfulness_scorecam_images = 4
  # The interactive explorer (eval/explorer/index.html): every test image with the maps of
  # every method in cam_methods for every target, boxes and crop.
  c.eval.explorer = True
  # ScoreCAM re-runs the model once per feature channel: in the explorer, only for the first
  # N test images (the others say so); the other methods cover every image.
  c.eval.explorer_scorecam_images = 4
  c.eval.explorer_map_size = 32     # stored maps: at most N cells a side (area-averaged)
  c.eval.explorer_thumb_size = 256  # thumbnails: longest side in pixels (JPEG)
  return c


def gradient_cam_methods_only(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The paper configs' evaluation: the six gradient-based methods, ScoreCAM opt-in.

  The paper's study is Grad-CAM. ScoreCAM reruns the network once per feature channel (1,280
  forwards an image at MobileNetV2's features.18, 512 at VGG16's features.30): at 224 px it took
  28 of the 46 min of a full-scale evaluation on a 2-core CPU, for 4 images. Opt in with
  --config.eval.cam_methods="('gradcam','gradcampp','hirescam','xgradcam','layercam','eigencam','scorecam')".
  """
  c.eval.cam_methods = tuple(m for m in c.eval.cam_methods if m != 'scorecam')
  return c


def apply_smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks any config to a tiny run for tests: 32 px, batch 8, 2 steps, 16/8 images."""
  c.input.resize_size = 40
  c.input.image_size = 32
  c.batch_size = 8
  c.eval.batch_size = 8
  c.num_train_steps = 2
  c.optim.warmup_steps = 0
  c.cache.num_train_views = 1
  c.data.max_train_images = 16
  c.data.max_test_images = 8
  c.log_every_steps = 1
  c.eval_every_steps = 2
  c.checkpoint_every_steps = 1
  return c
