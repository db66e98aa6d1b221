# METADATA
# title: Share policy
# description: |
#   What this lab publishes to its peers, per indicator (and the action that
#   produced it, if any). Tollgate evaluates data.tollgate.share.decision before
#   anything is signed and served over TAXII: {"publish": bool, "tlp", "pap",
#   "reason"}. By default it publishes the indicators entered here and what
#   stands behind this lab's own hard actions (blocks, key revocations), at
#   TLP:GREEN and PAP:GREEN unless the indicator is marked stricter. It never
#   re-shares intel pulled from peers, nor what a rule based on intel asked for.
#   Identifiers are keyed hashes before they reach this policy: nothing raw
#   can be published whatever it says.
# custom:
#   owner: threat-intel
package tollgate.share

_settings := object.get(data.tollgate.settings.default, "share", {})

_strictness := {"clear": 0, "green": 1, "amber": 2, "amber+strict": 3, "red": 4}

_hard := {"block", "revoke_key"}

# METADATA
# title: decision
# description: Whether and how one indicator is published.
# custom:
#   owner: threat-intel
decision := {
	"publish": true,
	"tlp": _stricter(_indicator_tlp, object.get(_settings, "tlp", "green")),
	"pap": _stricter(_indicator_pap, object.get(_settings, "pap", "green")),
	"reason": _why,
} if {
	_why
} else := {"publish": false, "reason": _refusal}

_indicator_tlp := object.get(input.indicator, "tlp", "green")

_indicator_pap := object.get(input.indicator, "pap", "green")

_stricter(a, b) := a if {
	_strictness[a] >= _strictness[b]
} else := b

_why := "entered by this lab" if {
	input.indicator.origin == "local"
	not input.action
	input.indicator.confidence >= object.get(_settings, "min_confidence", 0)
}

_why := sprintf("stands behind this lab's %s (%s)", [input.action.type, input.action.rule]) if {
	input.indicator.origin == "local"
	_hard[input.action.type]
	not startswith(input.action.rule, "intel.")
}

_refusal := "pulled from a peer: never re-shared" if {
	input.indicator.origin != "local"
} else := "the action is based on intel: never re-shared" if {
	startswith(input.action.rule, "intel.")
} else := "not a hard action" if {
	input.action
} else := "below the confidence to share"
