"""Bundles on a network: NVIDIA Triton (the model repository, its Python-backend model, the native-backend
export and its numpy steps, the packed environment, the server process, the KServe v2 client) and the local page
(``view``)."""
