"""Training-time components: the Hungarian matcher, the rotated overlap loss and the set criterion."""

from rotated_ddetr.training.criterion import SetCriterion, average_num_boxes
from rotated_ddetr.training.matcher import HungarianMatcher
from rotated_ddetr.training.overlap import kld, kld_loss

__all__ = ["HungarianMatcher", "SetCriterion", "average_num_boxes", "kld", "kld_loss"]
