//! `halcyon policy check FILE` and `halcyon policy explain`: for the people who maintain the policy.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::anyhow;
use halcyon_policy::{
    BreakGlass, ChildState, Fact, Involvement, Policy, Principal, Purpose, Request, Role, Stage,
};
use halcyon_schema::{AgencyId, Category};

use super::common::{deploy_path, load_registry};
use crate::{Failure, config_error};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Load and check a policy file; print what it grants, or each problem with file, line and reason.
    Check { file: PathBuf },
    /// Print the decision for one request and the rule path that produced it.
    Explain(Box<ExplainArgs>),
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    #[arg(long, default_value_os_t = deploy_path("policy/england.toml"))]
    policy: PathBuf,
    #[arg(long, default_value_os_t = deploy_path("agencies.toml"))]
    agencies: PathBuf,
    /// The asking agency (its kind comes from the registry).
    #[arg(long)]
    agency: AgencyId,
    #[arg(long, default_value = "practitioner")]
    role: Role,
    #[arg(long)]
    purpose: Purpose,
    /// The fact's data category, D0..D13.
    #[arg(long)]
    category: Category,
    /// The agency that recorded the fact.
    #[arg(long)]
    originator: AgencyId,
    /// The originating agency has approved disclosure to the asking agency.
    #[arg(long)]
    approved: bool,
    /// Police intelligence handling code.
    #[arg(long)]
    handling_code: Option<String>,
    /// Case stage terms: referral, s47, plan, plan-ended, looked-after, mash.
    #[arg(long, value_delimiter = ',')]
    stage: Vec<String>,
    /// The asking agency's involvements: own-case, strategy-participant, core-group, enrolled-pupil,
    /// treating-clinician.
    #[arg(long, value_delimiter = ',')]
    involvement: Vec<Involvement>,
    /// Categories the child (or parent) consented to share.
    #[arg(long, value_delimiter = ',')]
    consent: Vec<Category>,
    /// Categories with a recorded consent exemption.
    #[arg(long, value_delimiter = ',')]
    exempt: Vec<Category>,
    /// The child is in the asking agency's area (an agency of its area knows the child): the relationship
    /// `area`, for signals (D14).
    #[arg(long)]
    in_area: bool,
    /// The child's MASH referral was made in another area than the asking agency's: the relationship
    /// `mash-referral` is not its own.
    #[arg(long)]
    referral_elsewhere: bool,
    /// The asking agency is the child's lead authority (the relationship `lead-authority`).
    #[arg(long)]
    lead_authority: bool,
    /// Break-glass with this reason.
    #[arg(long)]
    break_glass: Option<String>,
}

pub fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Check { file } => match halcyon_policy::check(&file) {
            Ok(summary) => {
                println!("{summary}");
                Ok(())
            }
            Err(e) => Err(Failure {
                code: 1,
                error: anyhow!("{e}"),
            }),
        },
        Command::Explain(a) => {
            let a = *a;
            let policy = Policy::load(&a.policy).map_err(|e| config_error(anyhow!("{e}")))?;
            let registry = load_registry(&a.agencies)?;
            let kind = registry
                .get(&a.agency)
                .ok_or_else(|| {
                    config_error(anyhow!("agency {} is not in {}", a.agency, a.agencies.display()))
                })?
                .kind;
            let mut stage = Stage::default();
            for term in &a.stage {
                match term.as_str() {
                    "referral" => stage.referral = true,
                    "s47" => stage.s47_started = true,
                    "plan" => stage.plan_active = true,
                    "plan-ended" => stage.plan_ended = true,
                    "looked-after" => stage.looked_after = true,
                    "mash" => stage.mash_referral = true,
                    other => {
                        return Err(config_error(anyhow!(
                            "unknown stage {other:?} (referral, s47, plan, plan-ended, looked-after, mash)"
                        )));
                    }
                }
            }
            let principal = Principal {
                agency: a.agency,
                kind,
                role: a.role,
            };
            let fact = Fact {
                category: a.category,
                originator: a.originator,
                originator_approved: a.approved,
                handling_code: a.handling_code,
            };
            let state = ChildState {
                stage,
                involvements: a.involvement.into_iter().collect(),
                consented: a.consent.into_iter().collect::<BTreeSet<_>>(),
                exempted: a.exempt.into_iter().collect::<BTreeSet<_>>(),
                in_area: a.in_area,
                referral_elsewhere: a.referral_elsewhere,
                lead_authority: a.lead_authority,
            };
            let now_ms = 0;
            let break_glass = a.break_glass.map(|reason| BreakGlass {
                reason,
                started_at_ms: now_ms,
            });
            let request = Request {
                principal: &principal,
                purpose: a.purpose,
                fact: &fact,
                state: &state,
                break_glass: break_glass.as_ref(),
                now_ms,
            };
            print!("{}", halcyon_policy::explain(&policy, &request));
            Ok(())
        }
    }
}
