# lorabuild test fixture, written for lorabuild's importer tests: a launcher laid out like
# lora-scripts' train.ps1. Settings first; the lines after the marker turn them into one launch.

## what to train, on what
$model_type = "sd1.5" # sd1.5 | sd2.0 | sdxl | flux
$pretrained_model = "./sd-models/model.ckpt" # base checkpoint (基础模型)
$parameterization = 0 # 1 = v-prediction, for sd2.0
$train_data_dir = "./train/aki" # holds N_trigger folders
$reg_data_dir = "" # regularisation folders; empty = none
$output_name = "aki" # file name of the LoRA
$save_model_as = "safetensors" # ckpt | pt | safetensors

## the network
$network_module = "networks.lora" # lycoris.kohya for LyCORIS
$network_weights = "" # a LoRA to continue from
$network_dim = 32
$network_alpha = 32
$algo = "lora" # LyCORIS only: lora, loha, lokr, ia3, dylora
$conv_dim = 4 # LyCORIS only
$conv_alpha = 4 # LyCORIS only
$dropout = "0" # LyCORIS only

## schedule
$resolution = "512,512" # width,height
$batch_size = 1
$max_train_epoches = 10 # (sic: the variable's name in lora-scripts)
$save_every_n_epochs = 2
$lr = "1e-4"
$unet_lr = "1e-4"
$text_encoder_lr = "1e-5"
$lr_scheduler = "cosine_with_restarts"
$lr_warmup_steps = 0
$lr_restart_cycles = 1 # passed as --lr_scheduler_num_cycles
$optimizer_type = "AdamW8bit"

## switches and tweaks (1 = on)
$train_unet_only = 0
$train_text_encoder_only = 0
$stop_text_encoder_training = 0 # a step number; 0 = never
$noise_offset = 0 # a number here, unquoted
$keep_tokens = 0
$min_snr_gamma = 0
$min_bucket_reso = 256
$max_bucket_reso = 1024
$clip_skip = 2 # sd1.5 only
$persistent_data_loader_workers = 1
$multi_gpu = 0
$lowram = 0 # PowerShell: 0 is false, so this stays off
$save_state = 0
$resume = "" # a saved state folder to resume

## logging
$use_wandb = 0
$wandb_api_key = "" # never commit a real key
$log_tracker_name = ""

# -------- DO NOT MODIFY CONTENTS BELOW (the marker lora-scripts' scripts carry) --------
$Env:HF_HOME = "huggingface"

$trainer_file = "./scripts/stable/train_network.py"
$launch = @() # accelerate's own flags
$extra = @() # flags for kohya's script that depend on the settings

# The model type picks kohya's script; only sd1.5 is given a clip skip.
if ($model_type -eq "sdxl") { $trainer_file = "./scripts/stable/sdxl_train_network.py" }
elseif ($model_type -eq "flux") { $trainer_file = "./scripts/dev/flux_train_network.py" }
elseif ($model_type -eq "sd2.0") { $extra += "--v2" }
elseif ($model_type -eq "sd1.5") { $extra += "--clip_skip=$clip_skip" }

if ($multi_gpu) { $launch += "--multi_gpu", "--num_processes=2" }

# Switches: passed when the setting is true (PowerShell: 0 and "" are false).
if ($lowram) { $extra += "--lowram" }
if ($parameterization) { $extra += "--v_parameterization" }
if ($train_unet_only) { $extra += "--network_train_unet_only" }
if ($train_text_encoder_only) { $extra += "--network_train_text_encoder_only" }
if ($save_state -eq 1) { $extra += "--save_state" }
if ($persistent_data_loader_workers) { $extra += "--persistent_data_loader_workers" }

# Paths and names: passed when not empty.
if ($network_weights) { $extra += "--network_weights=$network_weights" }
if ($reg_data_dir) { $extra += "--reg_data_dir=$reg_data_dir" }
if ($optimizer_type) { $extra += "--optimizer_type=$optimizer_type" }
if ($resume) { $extra += "--resume=$resume" }

if ($optimizer_type -eq "DAdaptation") {
  $extra += "--optimizer_args", "decouple=True"
}

if ($network_module -eq "lycoris.kohya") {
  $extra += "--network_args", "conv_dim=$conv_dim", "conv_alpha=$conv_alpha", "algo=$algo", "dropout=$dropout"
}

if ($noise_offset -ne 0) { $extra += "--noise_offset=$noise_offset" }
if ($stop_text_encoder_training -ne 0) { $extra += "--stop_text_encoder_training=$stop_text_encoder_training" }
if ($min_snr_gamma -ne 0) { $extra += "--min_snr_gamma=$min_snr_gamma" }

if ($use_wandb -eq 1) {
  $extra += "--log_with=all"
  if ($wandb_api_key) { $extra += "--wandb_api_key=$wandb_api_key" }
  if ($log_tracker_name) { $extra += "--log_tracker_name=$log_tracker_name" }
}
else {
  $extra += "--log_with=tensorboard"
}

python -m accelerate.commands.launch @launch --num_cpu_threads_per_process=4 $trainer_file `
  --pretrained_model_name_or_path=$pretrained_model --train_data_dir=$train_data_dir `
  --network_module=$network_module --network_dim=$network_dim --network_alpha=$network_alpha `
  --resolution=$resolution --enable_bucket --min_bucket_reso=$min_bucket_reso --max_bucket_reso=$max_bucket_reso `
  --train_batch_size=$batch_size --max_train_epochs=$max_train_epoches --save_every_n_epochs=$save_every_n_epochs `
  --learning_rate=$lr --unet_lr=$unet_lr --text_encoder_lr=$text_encoder_lr `
  --lr_scheduler=$lr_scheduler --lr_warmup_steps=$lr_warmup_steps --lr_scheduler_num_cycles=$lr_restart_cycles `
  --output_dir="./output" --output_name=$output_name --save_model_as=$save_model_as `
  --logging_dir="./logs" --log_prefix=$output_name `
  --mixed_precision="fp16" --save_precision="fp16" --seed=1337 `
  --cache_latents --prior_loss_weight=1 --max_token_length=225 --caption_extension=".txt" `
  --keep_tokens=$keep_tokens --shuffle_caption --xformers @extra
