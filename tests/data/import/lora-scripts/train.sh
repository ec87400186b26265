#!/bin/bash
# lorabuild test fixture, written for lorabuild's importer tests: a launcher laid out like
# lora-scripts' train.sh. Settings first; the lines after the marker turn them into one launch.

## what to train, on what
model_type="sd1.5"                         # sd1.5 | sd2.0 | sdxl | flux
pretrained_model="./sd-models/model.ckpt"  # base checkpoint (基础模型)
parameterization=0                         # 1 = v-prediction, for sd2.0
train_data_dir="./train/aki"               # holds N_trigger folders
reg_data_dir=""                            # regularisation folders; empty = none
output_name="aki"                          # file name of the LoRA
save_model_as="safetensors"                # ckpt | pt | safetensors

## the network
network_module="networks.lora"  # lycoris.kohya for LyCORIS
network_weights=""              # a LoRA to continue from
network_dim=32
network_alpha=32
algo="lora"                     # LyCORIS only: lora, loha, lokr, ia3, dylora
conv_dim=4                      # LyCORIS only
conv_alpha=4                    # LyCORIS only
dropout="0"                     # LyCORIS only

## schedule
resolution="512,512"  # width,height
batch_size=1
max_train_epoches=10  # (sic: the variable's name in lora-scripts)
save_every_n_epochs=2
lr="1e-4"
unet_lr="1e-4"
text_encoder_lr="1e-5"
lr_scheduler="cosine_with_restarts"
lr_warmup_steps=0
lr_restart_cycles=1   # passed as --lr_scheduler_num_cycles
optimizer_type="AdamW8bit"

## switches and tweaks (1 = on)
train_unet_only=0
train_text_encoder_only=0
stop_text_encoder_training=0  # a step number; 0 = never
noise_offset="0"
keep_tokens=0
min_snr_gamma=0
min_bucket_reso=256
max_bucket_reso=1024
clip_skip=2                   # sd1.5 only
persistent_data_loader_workers=1
multi_gpu=0
lowram=0                      # see the note where it is used
save_state=0
resume=""                     # a saved state folder to resume

## logging
use_wandb=0
wandb_api_key=""              # never commit a real key
log_tracker_name=""

# -------- DO NOT MODIFY CONTENTS BELOW (the marker lora-scripts' scripts carry) --------
export HF_HOME="huggingface"

trainer_file="./scripts/stable/train_network.py"
launch=()   # accelerate's own flags
extra=()    # flags for kohya's script that depend on the settings

case "$model_type" in
  sd1.5) extra+=("--clip_skip=$clip_skip") ;;
  sd2.0) extra+=("--v2") ;;
  sdxl) trainer_file="./scripts/stable/sdxl_train_network.py" ;;
  flux) trainer_file="./scripts/dev/flux_train_network.py" ;;
esac

if [[ $multi_gpu == 1 ]]; then
  launch+=("--multi_gpu" "--num_processes=2")
fi

# Written like lora-scripts' test: any non-empty value turns lowram on, "0" included.
if [[ -n $lowram ]]; then
  extra+=("--lowram")
fi

for pair in parameterization:v_parameterization train_unet_only:network_train_unet_only \
  train_text_encoder_only:network_train_text_encoder_only save_state:save_state \
  persistent_data_loader_workers:persistent_data_loader_workers; do
  setting=${pair%%:*}
  if [[ ${!setting} == 1 ]]; then
    extra+=("--${pair#*:}")
  fi
done

for name in network_weights reg_data_dir optimizer_type resume; do
  if [[ -n ${!name} ]]; then
    extra+=("--$name=${!name}")
  fi
done

if [[ $optimizer_type == "DAdaptation" ]]; then
  extra+=("--optimizer_args" "decouple=True")
fi

if [[ $network_module == "lycoris.kohya" ]]; then
  extra+=("--network_args" "conv_dim=$conv_dim" "conv_alpha=$conv_alpha" "algo=$algo" "dropout=$dropout")
fi

if [[ $noise_offset != "0" ]]; then
  extra+=("--noise_offset=$noise_offset")
fi
if (( stop_text_encoder_training != 0 )); then
  extra+=("--stop_text_encoder_training=$stop_text_encoder_training")
fi
if (( min_snr_gamma != 0 )); then
  extra+=("--min_snr_gamma=$min_snr_gamma")
fi

if [[ $use_wandb == 1 ]]; then
  extra+=("--log_with=all")
  if [[ -n $wandb_api_key ]]; then
    extra+=("--wandb_api_key=$wandb_api_key")
  fi
  if [[ -n $log_tracker_name ]]; then
    extra+=("--log_tracker_name=$log_tracker_name")
  fi
else
  extra+=("--log_with=tensorboard")
fi

python -m accelerate.commands.launch "${launch[@]}" --num_cpu_threads_per_process=4 "$trainer_file" \
  --pretrained_model_name_or_path="$pretrained_model" --train_data_dir="$train_data_dir" \
  --network_module="$network_module" --network_dim="$network_dim" --network_alpha="$network_alpha" \
  --resolution="$resolution" --enable_bucket --min_bucket_reso="$min_bucket_reso" --max_bucket_reso="$max_bucket_reso" \
  --train_batch_size="$batch_size" --max_train_epochs="$max_train_epoches" --save_every_n_epochs="$save_every_n_epochs" \
  --learning_rate="$lr" --unet_lr="$unet_lr" --text_encoder_lr="$text_encoder_lr" \
  --lr_scheduler="$lr_scheduler" --lr_warmup_steps="$lr_warmup_steps" --lr_scheduler_num_cycles="$lr_restart_cycles" \
  --output_dir="./output" --output_name="$output_name" --save_model_as="$save_model_as" \
  --logging_dir="./logs" --log_prefix="$output_name" \
  --mixed_precision="fp16" --save_precision="fp16" --seed=1337 \
  --cache_latents --prior_loss_weight=1 --max_token_length=225 --caption_extension=".txt" \
  --keep_tokens="$keep_tokens" --shuffle_caption --xformers "${extra[@]}"
