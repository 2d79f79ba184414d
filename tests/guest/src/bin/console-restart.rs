//! Guest test agent (admin privilege): stops the console server and starts it again through
//! Studio. The new console must get the serial line's interrupt again (the old IRQ handler went
//! with the old console's CNode) and bring the shell back: the QEMU test types its next command at
//! the new prompt.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

use alloc::string::String;

use ozone_agent_sdk::protocol::studio::method;
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{entry, println};

entry!(run);

fn run() -> u64 {
    let studio = Client::studio();
    let console = String::from("console");
    let killed: Result<(), _> = studio.call(method::KILL, &console);
    if let Err(e) = killed {
        println!("FAIL: kill console: {e}");
        return 1;
    }
    println!("console stopped; starting it again");
    match studio.call(method::START, &console) {
        Ok(id) => {
            // The line above was printed while the console was down: dropped and counted.
            println!(
                "console started again (id {id}); {} line dropped while it was down",
                ozone_agent_sdk::log::dropped()
            );
            0
        }
        Err(e) => {
            println!("FAIL: start console: {e}");
            1
        }
    }
}
