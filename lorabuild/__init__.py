"""lorabuild: declarative recipes for training Stable Diffusion LoRAs with kohya sd-scripts."""

__version__ = "0.1.0"

# The kohya-ss/sd-scripts commit that lorabuild drives (the vendor/sd-scripts submodule pointer).
KOHYA_COMMIT = "48d368fa557731ad0488c07304dfeba8c07910eb"
