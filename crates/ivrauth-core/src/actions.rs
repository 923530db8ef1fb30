//! The registry of built-in actions a flow's `action` node can call.
//!
//! One node type, many named actions: `identity.*` now, `otp.*` and `pin.*` later, each
//! declared here with its inputs and outputs so the validator can check a flow without
//! knowing how (or by which backend) the host performs the action. Performing actions is the
//! host's job; this module only describes them.

/// One input of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSpec {
    pub name: &'static str,
    pub required: bool,
    /// The value must be secure (a PIN): it must come from a secure input or property, and
    /// the host receives it as a `Secret`.
    pub secret: bool,
    /// The value is used up by the action: once the action has completed (not when it
    /// could not be performed, so a flow may retry), the variable it came from is cleared
    /// from the run, so a verified PIN is not carried into later turns' sealed state.
    pub consumed: bool,
    pub description: &'static str,
}

/// One action: its name, inputs and outputs. Every action also has the output `error`
/// (`null`, or `{code, message}` when the host could not perform it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub inputs: &'static [InputSpec],
    pub outputs: &'static [&'static str],
    /// The action reads or judges an account (a lookup, a verification, a code sent to its
    /// phone): a simulation may perform it only with the scope `identity:simulate`, and it
    /// is limited per caller key like a call.
    pub reaches_account: bool,
}

const ACCOUNT: InputSpec = InputSpec {
    name: "account",
    required: true,
    secret: false,
    consumed: false,
    description: "the account number the caller keyed in",
};

/// Every registered action.
pub const ACTIONS: &[ActionSpec] = &[
    ActionSpec {
        name: "identity.lookup",
        description: "Find an account in the configured directory. `found` is false for an \
                      unknown account; speak nothing from a lookup before the caller is \
                      verified, or the flow tells strangers which accounts exist.",
        inputs: &[ACCOUNT],
        outputs: &[
            "found",
            "name",
            "greeting",
            "hasPhone",
            "hasEmail",
            "phoneMasked",
            "emailMasked",
            "error",
        ],
        reaches_account: true,
    },
    ActionSpec {
        name: "identity.verify",
        description: "Verify a secret (PIN or password) with lockout and anti-enumeration: \
                      an unknown account, a wrong secret, a locked and a disabled account all \
                      give `verified: false` with the same `attemptsLeft`; the reason goes to \
                      the audit only. `greeting` is set only when verified.",
        inputs: &[
            ACCOUNT,
            InputSpec {
                name: "secret",
                required: true,
                secret: true,
                consumed: true,
                description: "the PIN or password",
            },
        ],
        outputs: &["verified", "greeting", "attemptsLeft", "error"],
        reaches_account: true,
    },
];

pub fn find(name: &str) -> Option<&'static ActionSpec> {
    ACTIONS.iter().find(|a| a.name == name)
}

pub fn names() -> impl Iterator<Item = &'static str> {
    ACTIONS.iter().map(|a| a.name)
}
