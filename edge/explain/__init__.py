"""Why a model answered as it did: class activation maps computed with the answer (``saliency``), occlusion
for any model (``occlusion``) and the map drawn over the frame (``saliency_overlay``)."""
