# hv-stub boot glue: the 512-byte boot sector (real mode), the switch to
# 32-bit protected mode and identity-mapped long mode, the libc memory
# functions `core` expects, the exception stubs, the fault-safe RDMSR/WRMSR
# routines and the VM-exit trampoline. Everything else is Rust.
    .intel_syntax noprefix

# ---------------------------------------------------------------------------
# Boot sector, loaded by the BIOS at 0x7C00 with DL = boot drive.
# ---------------------------------------------------------------------------
    .section .boot16, "ax"
    .code16
    .global _start16
_start16:
    cli
    cld
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7C00
    .att_syntax
    ljmp $0, $1f
    .intel_syntax noprefix
1:
    mov [boot_drive], dl
    # Load _load_sectors sectors from LBA 1 to 0x07E0:0000, 64 per call.
    mov cx, OFFSET _load_sectors
load_loop:
    test cx, cx
    jz loaded
    mov bx, cx
    cmp bx, 64
    jbe 2f
    mov bx, 64
2:
    mov [dap_count], bx
    mov si, OFFSET dap
    mov dl, [boot_drive]
    mov ah, 0x42
    push cx
    push bx
    int 0x13
    pop bx
    pop cx
    jc disk_error
    sub cx, bx
    add dword ptr [dap_lba], 64
    add word ptr [dap_seg], 0x800
    jmp load_loop
loaded:
    jmp stage2
disk_error:
    mov al, 'D'
    out 0xE9, al
3:
    hlt
    jmp 3b

    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF        # 0x08: 32-bit code
    .quad 0x00CF92000000FFFF        # 0x10: data
    .quad 0x00AF9A000000FFFF        # 0x18: 64-bit code
boot_gdt_end:
boot_gdt_desc:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    .balign 4
dap:
    .byte 0x10, 0
dap_count:
    .word 0
dap_off:
    .word 0
dap_seg:
    .word 0x07E0
dap_lba:
    .quad 1
boot_drive:
    .byte 0

    .org 510
    .byte 0x55, 0xAA

# ---------------------------------------------------------------------------
# Real-mode second stage, loaded at 0x7E00 with the rest of the image: takes
# the firmware's E820 memory map, loads the Linux payload (if the disk has
# one) above 1 MiB, then enters 32-bit protected mode.
#
# Fixed low memory it fills (src/firmware.rs reads it; one home: the symbols):
#   hv_e820_map      count (u32) at +0, then 24-byte E820 entries from +8
#   hv_payload_table the disk's payload table + command line (8 sectors from
#                    PAYLOAD_LBA), first dword zeroed when there is none
#   hv_payload_stage the kernel file, then (4 KiB-aligned) the initrd file
# ---------------------------------------------------------------------------
    .set E820_MAP, 0x5000
    .set E820_MAX, 127
    .set PAYLOAD_TABLE, 0x4000
    .set PAYLOAD_LBA, 1008              # right after the 1-cylinder hv-stub image
    .set PAYLOAD_TABLE_SECTORS, 8
    .set PAYLOAD_STAGE, 0x1000000       # 16 MiB
    .set BOUNCE_SEG, 0x8000             # 0x80000: 64 sectors per INT 13h read
    .global hv_e820_map, hv_payload_table, hv_payload_stage
    .set hv_e820_map, E820_MAP
    .set hv_payload_table, PAYLOAD_TABLE
    .set hv_payload_stage, PAYLOAD_STAGE

    .section .boot16.stage2, "ax"
    .code16
stage2:
    # --- E820 -----------------------------------------------------------
    xor ebx, ebx
    mov di, E820_MAP + 8
    mov dword ptr [E820_MAP], 0
e820_next:
    mov eax, 0xE820
    mov edx, 0x534D4150                 # "SMAP"
    mov ecx, 24
    mov dword ptr [di + 20], 1          # ACPI 3 attributes: valid
    int 0x15
    jc e820_done
    cmp eax, 0x534D4150
    jne e820_done
    inc dword ptr [E820_MAP]
    add di, 24
    cmp dword ptr [E820_MAP], E820_MAX
    jae e820_done
    test ebx, ebx
    jnz e820_next
e820_done:
    # --- payload table ----------------------------------------------------
    mov dword ptr [PAYLOAD_TABLE], 0
    mov word ptr [dap_count], PAYLOAD_TABLE_SECTORS
    mov word ptr [dap_off], 0
    mov word ptr [dap_seg], PAYLOAD_TABLE >> 4
    mov dword ptr [dap_lba], PAYLOAD_LBA
    mov dword ptr [dap_lba + 4], 0
    call read_sectors
    jc no_payload                       # a 1-cylinder disk has no LBA 1008
    cmp dword ptr [PAYLOAD_TABLE], 0x494C5648   # "HVLI" of the magic "HVLINUX1"
    jne no_payload_clear
    mov si, OFFSET loading_msg
    call say16
    # Kernel file, then the initrd file 4 KiB-aligned after it.
    mov dword ptr [move_dest], PAYLOAD_STAGE
    mov eax, [PAYLOAD_TABLE + 8]        # kernel LBA
    mov ecx, [PAYLOAD_TABLE + 12]       # kernel sectors
    call load_high
    jc disk_error
    mov eax, [move_dest]
    add eax, 0xFFF
    and eax, ~0xFFF
    mov [move_dest], eax
    mov eax, [PAYLOAD_TABLE + 20]       # initrd LBA
    mov ecx, [PAYLOAD_TABLE + 24]       # initrd sectors
    call load_high
    jc disk_error
    jmp no_payload
no_payload_clear:
    mov dword ptr [PAYLOAD_TABLE], 0
no_payload:
    # A20 through the "fast A20" port; mask both PICs (the host runs IF=0).
    in al, 0x92
    or al, 2
    and al, 0xFE
    out 0x92, al
    mov al, 0xFF
    out 0x21, al
    out 0xA1, al
    lgdt [boot_gdt_desc]
    mov eax, cr0
    or eax, 1
    mov cr0, eax
    .att_syntax
    ljmp $0x08, $pm32
    .intel_syntax noprefix

# ECX sectors from LBA EAX to physical [move_dest] upwards (advanced), through
# the bounce buffer: INT 13h AH=42h, then INT 15h AH=87h (block move). CF on
# error.
load_high:
    test ecx, ecx
    jz 2f
    mov ebx, ecx
    cmp ebx, 64
    jbe 1f
    mov ebx, 64
1:
    push eax
    push ecx
    push ebx
    mov [dap_count], bx
    mov word ptr [dap_off], 0
    mov word ptr [dap_seg], BOUNCE_SEG
    mov [dap_lba], eax
    mov dword ptr [dap_lba + 4], 0
    call read_sectors
    jc 3f
    pop ebx
    push ebx
    # Block move: source = bounce buffer, destination = [move_dest].
    mov eax, [move_dest]
    mov [move_gdt + 24 + 2], ax
    shr eax, 16
    mov [move_gdt + 24 + 4], al
    mov [move_gdt + 24 + 7], ah
    mov cx, bx
    shl cx, 8                           # words = sectors * 256
    push es
    xor ax, ax
    mov es, ax
    mov si, OFFSET move_gdt
    mov ah, 0x87
    int 0x15
    pop es
    jc 3f
    pop ebx
    pop ecx
    pop eax
    add eax, ebx
    sub ecx, ebx
    shl ebx, 9
    add [move_dest], ebx
    jmp load_high
2:
    clc
    ret
3:
    pop ebx
    pop ecx
    pop eax
    stc
    ret

# The NUL-terminated string at SI to port 0xE9 (hv-stub's console).
say16:
    lodsb
    test al, al
    jz 1f
    out 0xE9, al
    jmp say16
1:
    ret
loading_msg:
    .asciz "HV loading the Linux payload\n"

# The boot sector's DAP, drive in boot_drive. CF on error.
read_sectors:
    mov si, OFFSET dap
    mov dl, [boot_drive]
    mov ah, 0x42
    int 0x13
    ret

    .balign 8
move_dest:
    .long 0
# INT 15h AH=87h descriptor table: two null entries, source, destination,
# two for the BIOS.
move_gdt:
    .quad 0, 0
    .word 0xFFFF                        # source: 0x80000, 64 KiB, data
    .byte 0x00, 0x00, 0x08, 0x93, 0x00, 0x00
    .word 0xFFFF                        # destination: patched per chunk
    .byte 0x00, 0x00, 0x00, 0x93, 0x00, 0x00
    .quad 0, 0

# ---------------------------------------------------------------------------
# Second stage, loaded at 0x7E00: 32-bit protected mode -> long mode.
# ---------------------------------------------------------------------------
    .section .boot32, "ax"
    .code32
pm32:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    mov esp, 0x7C00
    # Page tables at 0x1000 (PML4), 0x2000 (PDPT), 0x3000 (PD).
    mov edi, 0x1000
    xor eax, eax
    mov ecx, 0xC00
    rep stosd
    mov dword ptr [0x1000], 0x2003
    mov dword ptr [0x2000], 0x3003
    mov edi, 0x3000
    mov eax, 0x83                   # present, writable, 2 MiB page
    mov ecx, 512
4:
    mov [edi], eax
    add eax, 0x200000
    add edi, 8
    loop 4b
    # CR4: PAE | OSFXSR | OSXMMEXCPT (core uses SSE).
    mov eax, cr4
    or eax, (1 << 5) | (1 << 9) | (1 << 10)
    mov cr4, eax
    mov eax, 0x1000
    mov cr3, eax
    mov ecx, 0xC0000080             # IA32_EFER.LME
    rdmsr
    or eax, 1 << 8
    wrmsr
    # CR0: clear EM, NW, CD; set PG, NE, MP, PE.
    mov eax, cr0
    and eax, ~((1 << 2) | (1 << 29) | (1 << 30))
    or eax, (1 << 31) | (1 << 5) | (1 << 1) | 1
    mov cr0, eax
    .att_syntax
    ljmp $0x18, $lm64
    .intel_syntax noprefix

    .code64
lm64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    mov rdi, OFFSET _bss_start
    mov rcx, OFFSET _bss_end
    sub rcx, rdi
    xor eax, eax
    rep stosb
    mov rsp, OFFSET boot_stack_top
    call hv_main
5:
    cli
    hlt
    jmp 5b

# ---------------------------------------------------------------------------
# The C library functions the linux-gnu `core` links against.
# ---------------------------------------------------------------------------
    .text
    .global memcpy
memcpy:
    mov rax, rdi
    mov rcx, rdx
    rep movsb
    ret

    .global memset
memset:
    mov r8, rdi
    mov eax, esi
    mov rcx, rdx
    rep stosb
    mov rax, r8
    ret

    .global memmove
memmove:
    mov rax, rdi
    mov rcx, rdx
    cmp rdi, rsi
    jbe 6f
    lea rsi, [rsi + rcx - 1]
    lea rdi, [rdi + rcx - 1]
    std
    rep movsb
    cld
    ret
6:
    rep movsb
    ret

    .global memcmp
    .global bcmp
memcmp:
bcmp:
    xor eax, eax
    test rdx, rdx
    jz 8f
7:
    movzx eax, byte ptr [rdi]
    movzx ecx, byte ptr [rsi]
    sub eax, ecx
    jnz 8f
    inc rdi
    inc rsi
    dec rdx
    jnz 7b
8:
    ret

# ---------------------------------------------------------------------------
# Fault-safe MSR access. The #GP handler (Rust, src/cpu.rs) recognises the
# faulting RIP hv_rdmsr_insn / hv_wrmsr_insn and resumes at the matching
# recovery label, which returns 1.
#   u32 hv_safe_rdmsr(u32 msr, u64 *out)   -> 0 ok, 1 #GP
#   u32 hv_safe_wrmsr(u32 msr, u64 value)  -> 0 ok, 1 #GP
# ---------------------------------------------------------------------------
    .global hv_safe_rdmsr, hv_rdmsr_insn, hv_rdmsr_recover
hv_safe_rdmsr:
    mov ecx, edi
hv_rdmsr_insn:
    rdmsr
    shl rdx, 32
    or rax, rdx
    mov [rsi], rax
    xor eax, eax
    ret
hv_rdmsr_recover:
    mov eax, 1
    ret

    .global hv_safe_wrmsr, hv_wrmsr_insn, hv_wrmsr_recover
hv_safe_wrmsr:
    mov ecx, edi
    mov rax, rsi
    mov rdx, rsi
    shr rdx, 32
hv_wrmsr_insn:
    wrmsr
    xor eax, eax
    ret
hv_wrmsr_recover:
    mov eax, 1
    ret

# ---------------------------------------------------------------------------
# Exception stubs (vectors 0-31): push a dummy error code where the CPU does
# not, push the vector, save the GPRs and the FPU/SSE state, call
# hv_exception(frame), restore, iretq. Entered on an IST stack.
# ---------------------------------------------------------------------------
    .macro EXC_NOERR n
exc_\n:
    push 0
    push \n
    jmp exc_common
    .endm
    .macro EXC_ERR n
exc_\n:
    push \n
    jmp exc_common
    .endm

    EXC_NOERR 0
    EXC_NOERR 1
    EXC_NOERR 2
    EXC_NOERR 3
    EXC_NOERR 4
    EXC_NOERR 5
    EXC_NOERR 6
    EXC_NOERR 7
    EXC_ERR 8
    EXC_NOERR 9
    EXC_ERR 10
    EXC_ERR 11
    EXC_ERR 12
    EXC_ERR 13
    EXC_ERR 14
    EXC_NOERR 15
    EXC_NOERR 16
    EXC_ERR 17
    EXC_NOERR 18
    EXC_NOERR 19
    EXC_NOERR 20
    EXC_ERR 21
    EXC_NOERR 22
    EXC_NOERR 23
    EXC_NOERR 24
    EXC_NOERR 25
    EXC_NOERR 26
    EXC_NOERR 27
    EXC_NOERR 28
    EXC_ERR 29
    EXC_ERR 30
    EXC_NOERR 31

    .macro PUSH_GPRS
    push r15
    push r14
    push r13
    push r12
    push r11
    push r10
    push r9
    push r8
    push rbp
    push rdi
    push rsi
    push rdx
    push rcx
    push rbx
    push rax
    .endm
    .macro POP_GPRS
    pop rax
    pop rbx
    pop rcx
    pop rdx
    pop rsi
    pop rdi
    pop rbp
    pop r8
    pop r9
    pop r10
    pop r11
    pop r12
    pop r13
    pop r14
    pop r15
    .endm

exc_common:
    PUSH_GPRS
    mov rdi, rsp
    mov rbx, rsp
    and rsp, -16
    sub rsp, 512
    fxsave64 [rsp]
    call hv_exception
    fxrstor64 [rsp]
    mov rsp, rbx
    POP_GPRS
    add rsp, 16
    iretq

    .section .rodata.hv_exception_stubs, "a"
    .balign 8
    .global hv_exception_stubs
hv_exception_stubs:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exc_\n
    .endr

# ---------------------------------------------------------------------------
# VM exit: HOST_RIP. Saves the guest's GPRs and FPU/SSE state on the host
# exit stack (HOST_RSP), calls hv_vmexit(regs), restores, VMRESUMEs. If
# VMRESUME fails, hv_vmresume_failed() reports it and never returns.
# ---------------------------------------------------------------------------
    .text
    .global hv_vmexit_entry
hv_vmexit_entry:
    PUSH_GPRS
    mov rdi, rsp
    mov rbx, rsp
    and rsp, -16
    sub rsp, 512
    fxsave64 [rsp]
    call hv_vmexit
    fxrstor64 [rsp]
    mov rsp, rbx
    POP_GPRS
    vmresume
    and rsp, -16
    call hv_vmresume_failed
9:
    cli
    hlt
    jmp 9b

# ---------------------------------------------------------------------------
# Application-processor trampoline. src/smp.rs copies hv_ap_trampoline ..
# hv_ap_trampoline_end to AP_BASE (a page below 1 MiB that hv-stub keeps from
# the guest) and sends the startup IPI with vector AP_BASE >> 12, so this
# code runs at CS:IP = 0x0600:0000 in real mode. It takes the boot
# processor's path (boot GDT, 32-bit, the same identity-mapped page tables
# at 0x1000, long mode), draws a ticket (the arrival order), takes the
# ticket's stack from hv_ap_stacks and calls hv_ap_main(ticket). A ticket
# beyond the stacks parks the processor (IF=0, HLT). A processor that
# hv-stub restarts finds its stack in hv_ap_restart_stacks[APIC ID] and
# calls hv_ap_restart(APIC ID) instead.
# ---------------------------------------------------------------------------
    .set AP_BASE, 0x6000
    .set AP_STACK, 16384
    .set AP_MAX, 7                      # percpu::MAX_CPUS - 1
    .global hv_ap_trampoline, hv_ap_trampoline_end, hv_ap_tickets
    .section .text.hv_ap_trampoline, "ax"
    .code16
hv_ap_trampoline:
    cli
    cld
    xor ax, ax
    mov ds, ax
    lgdt [AP_BASE + ap_gdt_desc - hv_ap_trampoline]
    mov eax, cr0
    or eax, 1
    mov cr0, eax
    .att_syntax
    ljmpl $0x08, $(AP_BASE + ap_pm32 - hv_ap_trampoline)
    .intel_syntax noprefix
    .code32
ap_pm32:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    mov eax, cr4
    or eax, (1 << 5) | (1 << 9) | (1 << 10)
    mov cr4, eax
    mov eax, 0x1000
    mov cr3, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 1 << 8
    wrmsr
    mov eax, cr0
    and eax, ~((1 << 2) | (1 << 29) | (1 << 30))
    or eax, (1 << 31) | (1 << 5) | (1 << 1) | 1
    mov cr0, eax
    .att_syntax
    ljmp $0x18, $(AP_BASE + ap_lm64 - hv_ap_trampoline)
    .intel_syntax noprefix
    .code64
ap_lm64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    # A processor hv-stub restarts (smp.rs: Bochs 2.7's stale INIT) has a
    # stack waiting under its APIC ID.
    mov eax, 1
    cpuid
    shr ebx, 24
    mov rax, qword ptr [hv_ap_restart_stacks + rbx * 8]
    test rax, rax
    jz ap_first_start
    mov rsp, rax
    mov edi, ebx
    mov rax, OFFSET hv_ap_restart
    call rax
    jmp ap_park
ap_first_start:
    mov eax, 1
    lock xadd dword ptr [hv_ap_tickets], eax
    cmp eax, AP_MAX
    jae ap_park
    mov edi, eax
    lea rsp, [rax + 1]
    imul rsp, rsp, AP_STACK
    mov rax, OFFSET hv_ap_stacks
    add rsp, rax
    mov rax, OFFSET hv_ap_main
    call rax
ap_park:
    cli
    hlt
    jmp ap_park
    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF            # 0x08: 32-bit code
    .quad 0x00CF92000000FFFF            # 0x10: data
    .quad 0x00AF9A000000FFFF            # 0x18: 64-bit code
ap_gdt_desc:
    .word 31
    .long AP_BASE + ap_gdt - hv_ap_trampoline
hv_ap_trampoline_end:

    .section .data.hv_ap_tickets, "aw"
    .balign 4
hv_ap_tickets:
    .long 0

    .section .bss.hv_ap_stacks, "aw", @nobits
    .balign 16
hv_ap_stacks:
    .skip AP_STACK * AP_MAX
    .global hv_ap_restart_stacks
    .balign 8
hv_ap_restart_stacks:
    .skip 8 * 256                       # by APIC ID; 0 = none

# The boot stack (hv_main's stack, never returned from).
    .section .bss.boot_stack, "aw", @nobits
    .balign 16
boot_stack:
    .skip 65536
boot_stack_top:
