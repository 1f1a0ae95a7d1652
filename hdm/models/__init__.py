"""HDM networks: the shared diffusion denoiser, the discriminator, and the model combining them."""

from hdm.models.denoiser import Denoiser, build_unet
from hdm.models.discriminator import SegmentationUNet
from hdm.models.hdm_model import HDMModel, InferenceOutput
from hdm.models.scoring import MapScorer

__all__ = ["Denoiser", "HDMModel", "InferenceOutput", "MapScorer", "SegmentationUNet", "build_unet"]
