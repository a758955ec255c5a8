import DeviceSimulator
print("flippio-devsim: not built yet")
