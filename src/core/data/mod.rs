//! Data: the Adience protocol, UTKFace, image folders, CSV manifests, synthetic data, cached tensors, batches.
