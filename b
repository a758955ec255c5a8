20540 flippio 15
20543 -qos.overcommit 6255
20572 oot.default-qos 1
20573 oot.default-qos 1
20574 oot.default-qos 29
21316 oot.default-qos 3
21457 oot.default-qos 2
