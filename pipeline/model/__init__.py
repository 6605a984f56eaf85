"""The model: configuration (`config`, no torch), the network (`network`), the location prior
(`locate`), the device and precision rule (`precision`) and the checkpoint format
(`checkpoint`), which training writes and inference reads."""
