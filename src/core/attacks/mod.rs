//! Attacks in [0, 1] pixel space under L∞: R+Step-LL (as the paper writes it and as Tramèr et al. do), FGSM family,
//! iterative attacks, APGD, Square.
