"""Verdicts: whether an artifact may serve. The gate's rules (``verdict``), drift measured against the FP32
reference (``drift``), the reference probes an artifact must reproduce (``probes``, ``verify``), a site's own
certification (``certify``) and the explanation's drift (``saliency_drift``)."""
