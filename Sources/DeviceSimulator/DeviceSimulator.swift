/// The emulated Android device (placeholder until the simulator lands).
public enum DeviceSimulator {}
