print("flippio-ios-standin: not built yet")
