"""Training-time components: the Hungarian matcher, the KLD loss (`training.kld`) and the set criterion."""

from rotated_ddetr.training.criterion import SetCriterion, average_num_boxes
from rotated_ddetr.training.kld import kld_loss
from rotated_ddetr.training.matcher import HungarianMatcher

__all__ = ["HungarianMatcher", "SetCriterion", "average_num_boxes", "kld_loss"]
