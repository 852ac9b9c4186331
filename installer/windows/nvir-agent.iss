; Inno Setup 6 script: per-user install of the one-folder build in dist\nvir-agent\,
; no administrator rights. Built by installer\windows\build.ps1:
;   ISCC.exe /DAppVersion=0.1.0 installer\windows\nvir-agent.iss
; Installs into %LOCALAPPDATA%\Programs\NViR Agent, adds a Start-menu entry, optionally
; starts the tray at login (HKCU Run key, through `nvir-agent autostart install`).
; Uninstalling removes the program and the autostart entry; the data, config and logs
; in %LOCALAPPDATA%\nvir-agent stay.

#define AppName "NViR Agent"
#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif

[Setup]
AppId={{6A1F3C52-7E0B-4C8D-9B21-5D3E8F0A4C77}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=NViR Agent
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir=..\..\dist
OutputBaseFilename=nvir-agent-{#AppVersion}-setup
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern
UninstallDisplayIcon={app}\nvir-agent.exe
UninstallDisplayName={#AppName}
; a running agent holds files open: close it for the upgrade, start it again after
CloseApplications=yes
RestartApplications=no

[Tasks]
Name: "autostart"; Description: "Start {#AppName} when I log in (tray icon)"; GroupDescription: "Start at login:"

[InstallDelete]
; an upgrade replaces the bundled libraries as a whole: no stale DLL from the old version
Type: filesandordirs; Name: "{app}\_internal"

[Files]
Source: "..\..\dist\nvir-agent\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\{#AppName}"; Filename: "{app}\nvir-agentw.exe"; Parameters: "run"; WorkingDir: "{app}"; Comment: "Watch the microscope folders with a tray icon"
Name: "{group}\Uninstall {#AppName}"; Filename: "{uninstallexe}"

[Run]
Filename: "{app}\nvir-agent.exe"; Parameters: "autostart install"; Flags: runhidden; Tasks: autostart; StatusMsg: "Setting up start at login..."
Filename: "{app}\nvir-agentw.exe"; Parameters: "run"; Description: "Start {#AppName} now"; Flags: postinstall nowait skipifsilent

[UninstallRun]
Filename: "{app}\nvir-agent.exe"; Parameters: "autostart remove"; Flags: runhidden; RunOnceId: "RemoveAutostart"
Filename: "{sys}\taskkill.exe"; Parameters: "/F /IM nvir-agentw.exe"; Flags: runhidden; RunOnceId: "StopAgent"
