"""The product's domain core: pure, typed Python with no Faust, Kafka or Redis import.

Where each rule lives:

* ``facts``     — what the core consumes (purchases, refunds, interactions) in its units
* ``state``     — one bounded record per customer; folding purchases into it
* ``rules``     — every tunable threshold, validated from ``rules.toml``
* ``scoring``   — R, F, M scores 1–5 with hysteresis
* ``segments``  — named RFM segments; loyalty × profitability quadrants
* ``churn``     — BG/NBD: P(alive), its closed-form crossing times, the maximum-likelihood fit
* ``drift``     — churn severity from P(alive) and the customer's own purchase rhythm
* ``model``     — population cut points + BG/NBD parameters, versioned; ``calibrate``
* ``classify``  — evaluate a customer at an event time; what changed; when next due
* ``engine``    — one partition: clock, lateness, redelivery guard, due index
* ``offers``    — retention offer policy per quadrant, caps, cooldown, holdout
* ``events``    — what the core reports
"""
